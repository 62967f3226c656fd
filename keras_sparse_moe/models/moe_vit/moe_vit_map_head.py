"""Multi-head attention pooling (MAP) head of ViT / V-MoE."""

import keras
from keras import ops

from keras_sparse_moe.layers.activations import get_activation
from keras_sparse_moe.layers.qk_norm_attention import QKNormMultiHeadAttention
from keras_sparse_moe.utils.validation import check_int


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEViTMAPHead(keras.layers.Layer):
    """Pools a token sequence with one learned query (vmoe's `MapHead`).

    A learned `probe` (1, 1, D) attends over the tokens
    (`MultiHeadAttention`, query = probe, keys/values = tokens); its output
    `x` goes through a LayerNorm and an MLP (`Dense(mlp_dim)` ->
    `activation` -> `Dense(D)`), and the head returns `x + mlp(norm(x))`,
    shape (batch, D). As in vmoe there is no LayerNorm before the attention,
    and the residual adds the attention output, not the probe.

    Args:
        num_heads: int >= 1, dividing the token width.
        mlp_dim: int >= 1, hidden width of the MLP.
        activation: MLP activation (name or callable; `"gelu_approximate"`
            is vmoe's).
        layer_norm_epsilon: float > 0.
        qk_norm: bool, normalise the projected query and keys
            (`QKNormMultiHeadAttention`; vmoe's `MapHead` does when the
            encoder has `attention_qk_norm`). Default False.

    Example:
    >>> import numpy as np
    >>> head = MoEViTMAPHead(num_heads=2, mlp_dim=8)
    >>> tuple(head(np.zeros((3, 5, 4), "float32")).shape)
    (3, 4)
    """

    def __init__(self, num_heads, mlp_dim, activation="gelu", layer_norm_epsilon=1e-6,
                 qk_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.qk_norm = bool(qk_norm)
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.mlp_dim = check_int("mlp_dim", mlp_dim, minimum=1)
        get_activation(activation)
        self.activation = activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"The token width ({dim}) must be known and divisible by "
                f"num_heads={self.num_heads}."
            )
        policy = self.dtype_policy
        self.probe = self.add_weight(
            name="probe", shape=(1, 1, dim), initializer="glorot_uniform"
        )
        attention_cls = (
            QKNormMultiHeadAttention if self.qk_norm else keras.layers.MultiHeadAttention
        )
        self.attention = attention_cls(
            num_heads=self.num_heads, key_dim=dim // self.num_heads, dtype=policy,
            name="attention",
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm"
        )
        self.mlp_in = keras.layers.Dense(
            self.mlp_dim, activation=get_activation(self.activation), dtype=policy,
            name="mlp_in",
        )
        self.mlp_out = keras.layers.Dense(dim, dtype=policy, name="mlp_out")
        query_shape = (input_shape[0], 1, dim)
        self.attention.build(query_shape, input_shape)
        self.norm.build(query_shape)
        self.mlp_in.build(query_shape)
        self.mlp_out.build((input_shape[0], 1, self.mlp_dim))

    def call(self, tokens):
        probe = ops.zeros_like(tokens[:, :1, :]) + ops.cast(self.probe, tokens.dtype)
        x = self.attention(probe, tokens)
        y = self.mlp_out(self.mlp_in(self.norm(x)))
        return (x + y)[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "qk_norm": self.qk_norm,
            }
        )
        return config
