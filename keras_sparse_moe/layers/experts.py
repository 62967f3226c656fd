"""Batched expert MLPs."""

import keras
from keras import ops

from keras_sparse_moe.layers.activations import get_activation
from keras_sparse_moe.layers.activations import serialize_activation
from keras_sparse_moe.layers.ragged_experts import ragged_mlp
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


DROPOUT_PLACEMENTS = ("hidden", "vmoe")


def _reseeded(initializer, offset):
    """A copy of `initializer` that does not repeat its values: Keras random
    initializers return the same values at every call (an unseeded one
    draws its seed once, when created). An integer seed is shifted by
    `offset`; without a seed the copy draws a fresh one."""
    config = initializer.get_config()
    if "seed" not in config:
        return initializer  # not random (e.g. zeros, constant)
    seed = config["seed"]
    if isinstance(seed, int):
        return initializer.__class__.from_config(dict(config, seed=seed + offset))
    if seed is None:
        return initializer.__class__.from_config(config)
    return initializer  # a SeedGenerator advances at every call


def per_expert_initializer(initializer, weight_index):
    """Initialise an `(experts, fan_in, fan_out)` kernel expert by expert,
    each like the kernel of a dense layer: fans from `(fan_in, fan_out)`
    (not scaled by the number of experts) and, for seeded initializers,
    a distinct seed per expert and per weight (`weight_index`)."""

    def initialize(shape, dtype=None):
        experts = shape[0]
        return ops.stack([
            _reseeded(initializer, (weight_index * experts + k) * 7919)(tuple(shape[1:]), dtype=dtype)
            for k in range(experts)
        ])

    return initialize


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class Experts(keras.layers.Layer):
    """`num_experts` independent MLPs evaluated as one batched matmul.

    Input `(E, N, D)`: for each expert, the `N` token slots routed to it.
    Output `(E, N, D)`. With `group_sizes` (E,) the input is instead `(M, D)`
    rows sorted by expert (the first `group_sizes[0]` rows go to expert 0,
    and so on), each expert only multiplies its own rows (JAX and PyTorch;
    see `ragged_experts.py`), and the output is `(M, D)`.
    Weights: `kernel_in` (E, D, H), `kernel_out` (E, H, D),
    biases (E, H) and (E, D); with `gated=True` also `kernel_gate` (E, D, H)
    and the hidden activation becomes `activation(x @ W_gate) * (x @ W_in)`
    (SwiGLU when `activation="silu"`).

    Args:
        num_experts: int >= 1.
        intermediate_dim: int >= 1, hidden width `H` of each expert.
        activation: activation name or callable; `"gelu_approximate"` is
            the tanh-approximate GELU of ViT / V-MoE (`"gelu"` is exact).
        gated: bool, gated MLP (GLU family).
        dropout: float in [0, 1), dropout rate inside the experts.
        dropout_placement: where that dropout acts. `"hidden"` (default): on
            the hidden activations. `"vmoe"`: as the expert MLPs of vmoe /
            ViT (`MlpBlock`), on the hidden activations and again on each
            expert's output, slot by slot, before the outputs are combined
            (a token sent to two experts gets two independent masks).
        use_bias: bool.
        kernel_initializer, bias_initializer: initializers.

    Example:
    >>> import numpy as np
    >>> experts = Experts(num_experts=4, intermediate_dim=32)
    >>> tuple(experts(np.zeros((4, 10, 16), "float32")).shape)
    (4, 10, 16)
    """

    def __init__(
        self,
        num_experts,
        intermediate_dim,
        activation="gelu",
        gated=False,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        dropout_placement="hidden",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.intermediate_dim = check_int("intermediate_dim", intermediate_dim, minimum=1)
        self.activation = get_activation(activation)
        self.gated = bool(gated)
        self.dropout = check_float("dropout", dropout, minimum=0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"Argument `dropout` must be in [0, 1); received dropout={dropout}.")
        self.dropout_placement = check_choice(
            "dropout_placement", dropout_placement, DROPOUT_PLACEMENTS
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.output_dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"Experts need a known last dimension; received {input_shape}.")
        e, h = self.num_experts, self.intermediate_dim
        self.kernel_in = self.add_weight(
            name="kernel_in", shape=(e, dim, h),
            initializer=per_expert_initializer(self.kernel_initializer, 0),
        )
        if self.gated:
            self.kernel_gate = self.add_weight(
                name="kernel_gate", shape=(e, dim, h),
                initializer=per_expert_initializer(self.kernel_initializer, 2),
            )
        self.kernel_out = self.add_weight(
            name="kernel_out", shape=(e, h, dim),
            initializer=per_expert_initializer(self.kernel_initializer, 1),
        )
        if self.use_bias:
            self.bias_in = self.add_weight(
                name="bias_in", shape=(e, h), initializer=self.bias_initializer
            )
            self.bias_out = self.add_weight(
                name="bias_out", shape=(e, dim), initializer=self.bias_initializer
            )

    def call(self, inputs, training=None, group_sizes=None):
        outputs = self._mlp(inputs, training, group_sizes)
        if self.dropout_placement == "vmoe":
            outputs = self.output_dropout_layer(outputs, training=training)
        return outputs

    def _mlp(self, inputs, training, group_sizes):
        if group_sizes is not None:
            return ragged_mlp(
                inputs,
                group_sizes,
                self.kernel_in,
                self.kernel_out,
                self.activation,
                kernel_gate=self.kernel_gate if self.gated else None,
                bias_in=self.bias_in if self.use_bias else None,
                bias_out=self.bias_out if self.use_bias else None,
                hidden_fn=lambda h: self.dropout_layer(h, training=training),
            )
        hidden = ops.matmul(inputs, self.kernel_in)
        if self.use_bias:
            hidden = hidden + ops.expand_dims(self.bias_in, 1)
        if self.gated:
            hidden = self.activation(ops.matmul(inputs, self.kernel_gate)) * hidden
        else:
            hidden = self.activation(hidden)
        hidden = self.dropout_layer(hidden, training=training)
        outputs = ops.matmul(hidden, self.kernel_out)
        if self.use_bias:
            outputs = outputs + ops.expand_dims(self.bias_out, 1)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "intermediate_dim": self.intermediate_dim,
                "activation": serialize_activation(self.activation),
                "gated": self.gated,
                "dropout": self.dropout,
                "dropout_placement": self.dropout_placement,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
