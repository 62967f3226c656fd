"""Pre-LayerNorm transformer encoder block whose MLP may be a SparseMoE."""

import keras
from keras import ops

from keras_sparse_moe.layers.activations import get_activation
from keras_sparse_moe.layers.qk_norm_attention import QKNormMultiHeadAttention
from keras_sparse_moe.layers.sparse_moe import SparseMoE
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch of an example with probability `rate`
    in training (Huang et al. 2016) and rescales the kept ones.

    Args:
        rate: float in [0, 1).
        seed: int or None.

    Example:
    >>> import numpy as np
    >>> tuple(StochasticDepth(0.1)(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_float("rate", rate, minimum=0.0)
        if self.rate >= 1.0:
            raise ValueError(f"Argument `rate` must be in [0, 1); received rate={rate}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return inputs * ops.cast(mask, inputs.dtype) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoETransformerEncoderBlock(keras.layers.Layer):
    """ViT-style pre-LN encoder block: `x + MHA(LN(x))`, then `x + MLP(LN(x))`.

    With `moe=None` the MLP is dense (`Dense(mlp_dim) -> gelu -> Dense(dim)`);
    with `moe` a dict of `SparseMoE` arguments the MLP is a `SparseMoE` with
    `intermediate_dim=mlp_dim` (per-expert width, as in V-MoE).

    Args:
        num_heads: int >= 1; must divide the model width.
        mlp_dim: int >= 1, hidden width of the MLP (of each expert).
        moe: None or dict of `SparseMoE` keyword arguments (must contain
            `num_experts`).
        dropout_rate: float, dropout after attention and MLP (not after a
            SparseMoE with `dropout_placement="vmoe"`, whose experts apply
            their own `dropout`, as in vmoe).
        attention_dropout: float, dropout on attention probabilities.
        stochastic_depth: float, drop-path rate of both residual branches.
        layer_norm_epsilon: float.
        activation: MLP activation name or callable (`"gelu_approximate"`:
            the tanh-approximate GELU of ViT / V-MoE).
        qk_norm: bool, normalise the projected queries and keys of every
            head (`QKNormMultiHeadAttention`, as vmoe's
            `attention_qk_norm`). Default False.

    Call arguments:
        inputs: (batch, tokens, dim).
        attention_mask: optional bool (batch, tokens, tokens), True where a
            query may attend to a key (e.g. to ignore text padding).
        training: bool.

    Example:
    >>> import numpy as np
    >>> block = MoETransformerEncoderBlock(
    ...     num_heads=2, mlp_dim=32, moe={"num_experts": 4, "top_k": 2})
    >>> tuple(block(np.zeros((2, 5, 16), "float32")).shape)
    (2, 5, 16)
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        moe=None,
        dropout_rate=0.0,
        attention_dropout=0.0,
        stochastic_depth=0.0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        qk_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.qk_norm = bool(qk_norm)
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.mlp_dim = check_int("mlp_dim", mlp_dim, minimum=1)
        if moe is not None and (not isinstance(moe, dict) or "num_experts" not in moe):
            raise ValueError(
                "Argument `moe` must be None (dense MLP) or a dict of SparseMoE arguments "
                f"containing 'num_experts'; received moe={moe!r}."
            )
        self.moe = None if moe is None else dict(moe)
        self.dropout_rate = check_float("dropout_rate", dropout_rate, minimum=0.0)
        self.attention_dropout = check_float("attention_dropout", attention_dropout, minimum=0.0)
        self.stochastic_depth = check_float("stochastic_depth", stochastic_depth, minimum=0.0)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        get_activation(activation)  # validates the name
        self.activation = activation

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"The model width ({dim}) must be known and divisible by "
                f"num_heads={self.num_heads}."
            )
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        attention_cls = (
            QKNormMultiHeadAttention if self.qk_norm else keras.layers.MultiHeadAttention
        )
        self.attention = attention_cls(
            num_heads=self.num_heads,
            key_dim=dim // self.num_heads,
            dropout=self.attention_dropout,
            dtype=policy,
            name="attention",
        )
        self.norm2 = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        if self.moe is None:
            self.mlp_in = keras.layers.Dense(
                self.mlp_dim, activation=get_activation(self.activation), dtype=policy,
                name="mlp_in",
            )
            self.mlp_out = keras.layers.Dense(dim, dtype=policy, name="mlp_out")
        else:
            moe_args = {"activation": self.activation, **self.moe}
            self.mlp = SparseMoE(intermediate_dim=self.mlp_dim, dtype=policy, name="moe", **moe_args)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy)
        self.drop_path = StochasticDepth(self.stochastic_depth, dtype=policy)

        self.drop_path.build(input_shape)
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        if self.moe is None:
            self.mlp_in.build(input_shape)
            self.mlp_out.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
        else:
            self.mlp.build(input_shape)

    @property
    def is_moe(self):
        return self.moe is not None

    def call(self, inputs, attention_mask=None, training=None):
        return self._residual_branches(inputs, attention_mask, training)

    def _residual_branches(self, inputs, attention_mask, training, **moe_arguments):
        """The two pre-LN residual branches; `moe_arguments` go to
        `_sparse_mlp` (subclasses pass e.g. a token mask)."""
        x = self.norm1(inputs)
        x = self.attention(x, x, attention_mask=attention_mask, training=training)
        x = self.dropout(x, training=training)
        x = inputs + self.drop_path(x, training=training)
        y = self.norm2(x)
        if self.moe is None:
            y = self.dropout(self.mlp_out(self.mlp_in(y)), training=training)
        else:
            y = self._sparse_mlp(y, training=training, **moe_arguments)
            if self.mlp.dropout_placement != "vmoe":  # vmoe: the experts drop out
                y = self.dropout(y, training=training)
        return x + self.drop_path(y, training=training)

    def _sparse_mlp(self, x, training=None):
        return self.mlp(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "moe": self.moe,
                "dropout_rate": self.dropout_rate,
                "attention_dropout": self.attention_dropout,
                "stochastic_depth": self.stochastic_depth,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
                "qk_norm": self.qk_norm,
            }
        )
        return config
