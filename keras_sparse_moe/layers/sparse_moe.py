"""The sparse mixture-of-experts layer."""

import inspect
import math

import keras
import numpy as np
from keras import ops

from keras_sparse_moe.distribution.constraints import constrain_expert_tensor
from keras_sparse_moe.distribution.constraints import constrain_group_tensor
from keras_sparse_moe.layers.activations import serialize_activation
from keras_sparse_moe.layers.experts import Experts
from keras_sparse_moe.layers.router_registry import make_router
from keras_sparse_moe.layers.router_registry import router_option_names
from keras_sparse_moe.utils.validation import check_int


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SparseMoE(keras.layers.Layer):
    """Sparse mixture-of-experts MLP block.

    Tokens are split into routing groups of `group_size` tokens (default: the
    tokens of one example). Per group a router (float32) assigns tokens to
    expert slots; each expert is an MLP that only sees the tokens routed to
    it, so at fixed `top_k` the cost per token does not grow with
    `num_experts` beyond the router. Every expert keeps at most
    `capacity = ceil(group_size * top_k * capacity_factor / num_experts)`
    tokens per group, a static Python int, so the layer works with a dynamic
    batch size, under XLA, in torch and in LiteRT.

    Routers (`router=`, a registered name, see `register_router`, or a
    `Router` instance):

    - `"token_choice"`: top-k softmax router (V-MoE/GShard/Switch) with noisy
      gating, jitter, optional gate renormalisation and Batch Priority
      Routing. Overflowing assignments are dropped (the token gets zero from
      that expert; the residual around the block carries it).
      `capacity_factor=None` is *dropless*: every assignment is processed
      (see `dropless_impl`).
    - `"expert_choice"`: each expert picks its best tokens (Zhou et al. 2022).
    - `"soft"`: Soft MoE slots (Puigcerver et al. 2023), no dropping.

    The layer has no per-router code: the router returns its routing and a
    dispatcher (`dispatchers.py`) that moves the tokens to the experts and
    back. Router options are keyword arguments of this layer, forwarded to
    the router (each router validates its own; options of other routers are
    ignored), and written back by `get_config`.

    Auxiliary losses (V-MoE importance and load, Switch load balancing,
    ST-MoE z-loss) are added with `add_loss` in training only, each scaled by
    its weight. During training the layer records the last batch's
    `dropped_fraction` and per-expert `expert_fraction` in non-trainable
    variables (see `keras_sparse_moe.callbacks.RoutingStatistics` to log them
    during `fit`); `routing_stats(x)` returns them for any input.

    Args:
        num_experts: int >= 1.
        intermediate_dim: int >= 1, hidden width of each expert.
        top_k: int in [1, num_experts], experts per token.
        router: a registered router name (`"token_choice"`,
            `"expert_choice"`, `"soft"`, or one added with
            `register_router`), a `Router` instance (then `top_k` and the
            capacity factors are the router's) or a serialized router dict.
        capacity_factor: float > 0, or None for dropless token choice.
        eval_capacity_factor: float > 0 or None (same as training); the
            capacity factor used at inference.
        group_size: int or None (one example's tokens). Tokens per routing
            group, as vmoe's `group_size`: the tokens of the batch, flattened
            example after example, are cut into groups of `group_size`
            consecutive tokens, so a group may hold part of an example or
            span several; the batch must hold a whole number of groups (see
            `batch_multiple`).
        activation: expert activation (`"gelu_approximate"`: the
            tanh-approximate GELU of ViT / V-MoE; `"gelu"` is exact).
        gated: bool, gated experts (SwiGLU with `activation="silu"`).
        dropout: float in [0, 1), dropout inside the experts.
        dropout_placement: `"hidden"` (default: on the experts' hidden
            activations) or `"vmoe"` (as vmoe: on the hidden activations
            and on each expert's output before the combine; an enclosing
            `MoETransformerEncoderBlock` then adds no dropout of its own to
            the MoE output). See `Experts`.
        use_bias: bool, biases in the experts.
        kernel_initializer: initializer of the expert kernels.
        router_initializer: initializer of the router kernel (None: the
            router's default).
        **kwargs: router options, forwarded to the router class, e.g. for
            `"token_choice"` (see `TokenChoiceRouter`): `noise_std`,
            `jitter`, `renormalize_gates`, `batch_priority`,
            `importance_loss_weight`, `load_loss_weight`,
            `load_balancing_loss_weight`, `seed`, `dropless_impl`; for
            `"soft"` (`SoftRouter`): `slots_per_expert`, `normalize`, `noise_std`; for
            every router `z_loss_weight`. Other keyword arguments go to
            `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:
    >>> import numpy as np
    >>> moe = SparseMoE(num_experts=8, intermediate_dim=64, top_k=2)
    >>> y = moe(np.random.rand(2, 16, 32).astype("float32"))
    >>> tuple(y.shape)
    (2, 16, 32)
    """

    def __init__(
        self,
        num_experts,
        intermediate_dim,
        top_k=2,
        router="token_choice",
        capacity_factor=1.25,
        eval_capacity_factor=None,
        group_size=None,
        activation="gelu",
        gated=False,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        router_initializer=None,
        dropout_placement="hidden",
        **kwargs,
    ):
        known = router_option_names()
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in known}
        super().__init__(**kwargs)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.intermediate_dim = check_int("intermediate_dim", intermediate_dim, minimum=1)
        self.group_size = (
            None if group_size is None else check_int("group_size", group_size, minimum=1)
        )
        self.activation = activation
        self.gated = bool(gated)
        self.dropout = dropout
        self.dropout_placement = dropout_placement
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.router = make_router(
            router,
            num_experts=self.num_experts,
            top_k=top_k,
            capacity_factor=capacity_factor,
            eval_capacity_factor=eval_capacity_factor,
            kernel_initializer=router_initializer,
            **options,
        )
        self.router_type = self.router.router_name
        if isinstance(router, str):
            self.top_k = top_k
            self.capacity_factor = capacity_factor
            self.eval_capacity_factor = eval_capacity_factor
            self.router_initializer = (
                None if router_initializer is None
                else keras.initializers.get(router_initializer)
            )
        else:  # the router's own settings
            self.top_k = self.router.top_k
            self.capacity_factor = self.router.capacity_factor
            self.eval_capacity_factor = self.router.eval_capacity_factor
            self.router_initializer = self.router.kernel_initializer
        self.experts = Experts(
            num_experts=self.num_experts,
            intermediate_dim=self.intermediate_dim,
            activation=activation,
            gated=gated,
            dropout=dropout,
            dropout_placement=dropout_placement,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="experts",
        )
        self._tokens_per_example = None
        self._input_rank = None

    @classmethod
    def argument_names(cls):
        """Names of the layer's own arguments and of every registered
        router's options (the keyword arguments `SparseMoE` accepts besides
        the `keras.layers.Layer` ones).

        Example:
        >>> "noise_std" in SparseMoE.argument_names()
        True
        """
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        own = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        return sorted(own | router_option_names())

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (2, 3):
            raise ValueError(
                "SparseMoE expects inputs of shape (batch, tokens, dim) or (batch, dim); "
                f"received an input of rank {len(input_shape)} with shape {input_shape}."
            )
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                f"SparseMoE needs a known last (feature) dimension; received shape {input_shape}."
            )
        tokens = 1 if len(input_shape) == 2 else input_shape[1]
        group_size = None
        if tokens is not None:
            group_size = self._group_size_for(tokens)
        self._input_rank = len(input_shape)
        # The weights depend on `dim` only. The token count seen at build time
        # gives the default group size / capacity reported by `capacity()`;
        # each call routes with the static token count of its own input.
        self._tokens_per_example = tokens
        self.router.build((None, group_size, dim))
        self.experts.build((self.num_experts, None, dim))
        self.stat_dropped_fraction = self.add_weight(
            name="dropped_fraction", shape=(), initializer="zeros", trainable=False,
            dtype="float32",
        )
        self.stat_expert_fraction = self.add_weight(
            name="expert_fraction", shape=(self.num_experts,), initializer="zeros",
            trainable=False, dtype="float32",
        )

    def _group_size_for(self, tokens):
        """Routing group size for `tokens` tokens per example: `group_size`,
        or one example's tokens when it is None."""
        return self.group_size or tokens

    def batch_multiple(self, tokens=None):
        """The batch sizes this layer accepts are the multiples of this int:
        groups are `group_size` consecutive tokens of the flattened batch
        (as in vmoe), so the batch must hold a whole number of groups.

        Args:
            tokens: tokens per example (default: as built).

        Example:
        >>> moe = SparseMoE(num_experts=4, intermediate_dim=8, group_size=4)
        >>> moe.batch_multiple(tokens=6)  # 2 examples of 6 tokens = 3 groups
        2
        """
        tokens = tokens or self._tokens_per_example or 1
        group_size = self._group_size_for(tokens)
        return group_size // math.gcd(group_size, tokens)

    @property
    def routing_group_size(self):
        """Tokens per routing group for the input shape the layer was built on."""
        return self.router.group_size

    def capacity(self, training=False, group_size=None):
        """Static per-expert capacity per group.

        Args:
            training: bool, use `capacity_factor` (True) or
                `eval_capacity_factor` (False, when set).
            group_size: tokens per group (default: as built).
        """
        return self.router.capacity(training, group_size)

    # ------------------------------------------------------------------- call
    def _check_inputs(self, x, token_mask=None):
        """Validate a call's input; returns (tokens per example, group size)."""
        dtype = keras.backend.standardize_dtype(x.dtype)
        if "float" not in dtype:
            raise ValueError(
                f"SparseMoE expects floating-point inputs; received dtype {dtype}. "
                "Cast the input, e.g. `keras.ops.cast(x, 'float32')`."
            )
        rank = len(x.shape)
        if rank != self._input_rank:
            raise ValueError(
                f"SparseMoE was built for inputs of rank {self._input_rank}; received "
                f"rank {rank} with shape {tuple(x.shape)}."
            )
        tokens = 1 if rank == 2 else x.shape[1]
        if tokens is None:
            raise ValueError(
                "SparseMoE needs a known number of tokens per example to make the expert "
                f"capacity static; received shape {tuple(x.shape)}. Give the Input a fixed "
                "sequence length."
            )
        group_size = self._group_size_for(tokens)
        batch = x.shape[0]
        if isinstance(batch, int) and (batch * tokens) % group_size:
            raise ValueError(
                f"The {batch * tokens} tokens of this batch (batch={batch} "
                f"x tokens={tokens}) cannot be divided into routing groups of "
                f"group_size={group_size} tokens; use a batch size that is a multiple of "
                f"{self.batch_multiple(tokens)}."
            )
        if token_mask is not None and tuple(token_mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"Argument `token_mask` must have the input's shape without the feature "
                f"axis, {tuple(x.shape[:-1])}; received shape {tuple(token_mask.shape)}."
            )
        return tokens, group_size

    def uses_ragged_experts(self, training=False):
        """Whether a call runs the experts on expert-sorted rows (dropless
        `"ragged"` path) rather than on padded per-expert buffers (the
        router's choice)."""
        return self.router.uses_ragged_experts(training)

    def _route(self, x, training, group_size, token_mask=None):
        """Expert outputs combined per token, and the routing dict."""
        groups = ops.reshape(x, (-1, group_size, x.shape[-1]))
        # Under expert parallelism (JAX) each group stays on the device of its
        # examples (an error says what to change if a group would straddle two);
        # the dispatchers then move tokens by all-to-all. A no-op otherwise.
        groups = constrain_group_tensor(groups, x.shape[0], group_size)
        mask = None if token_mask is None else ops.reshape(token_mask, (-1, group_size))
        routing = self.router(groups, training=training, dense=False, token_mask=mask)
        dispatcher = self.router.dispatcher(
            routing, group_size, training=training, token_mask=mask
        )
        expert_inputs = dispatcher.dispatch(groups)
        if dispatcher.expert_major:  # (E, G*C, D), sharded on "expert"
            expert_inputs = constrain_expert_tensor(expert_inputs)
        expert_outputs = self.experts(
            expert_inputs, training=training, **dispatcher.expert_kwargs
        )
        if dispatcher.expert_major:
            expert_outputs = constrain_expert_tensor(expert_outputs)
        return dispatcher.combine(expert_outputs), routing

    def call(self, inputs, training=None, token_mask=None, return_routing=False):
        """Route, run the experts and combine.

        Args:
            inputs: (batch, tokens, dim) or (batch, dim), floating point.
            training: bool.
            token_mask: optional bool (batch, tokens) (or (batch,) for 2-D
                inputs): false marks tokens that must not be routed (e.g.
                text padding); they take no expert capacity and their output
                is zero. Routing statistics and the importance loss count
                real tokens only.
            return_routing: bool, also return the router's dict (e.g.
                `router_probs` for LIMoE's entropy losses).

        Returns:
            Outputs of the input's shape, or `(outputs, routing)`.
        """
        tokens, group_size = self._check_inputs(inputs, token_mask)
        training = bool(training)
        combined, routing = self._route(inputs, training, group_size, token_mask)
        outputs = ops.reshape(combined, ops.shape(inputs))
        if training:
            self.add_loss(routing["aux_loss"])
            self.stat_dropped_fraction.assign(ops.cast(routing["dropped_fraction"], "float32"))
            self.stat_expert_fraction.assign(ops.cast(routing["expert_fraction"], "float32"))
        if token_mask is not None:
            outputs = outputs * ops.cast(ops.expand_dims(token_mask, -1), outputs.dtype)
        # A NaN anywhere in a token's features makes that token's output NaN,
        # even where routing dropped the token (which would otherwise give 0).
        has_nan = ops.any(ops.not_equal(inputs, inputs), axis=-1, keepdims=True)
        outputs = ops.where(has_nan, ops.cast(float("nan"), outputs.dtype), outputs)
        if return_routing:
            return outputs, routing
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, *args, **kwargs):
        if kwargs.get("return_routing"):
            # The routing dict's structure: trace `call` symbolically.
            return keras.Operation.compute_output_spec(self, inputs, *args, **kwargs)
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    # --------------------------------------------------------------- analysis
    def routing_stats(self, inputs, training=False):
        """Routing statistics of this layer for `inputs`, as NumPy values.

        Args:
            inputs: array of the layer's input shape.
            training: bool, route as in training (noise, training capacity).

        Returns:
            A dict: `dropped_fraction` (share of assignments, or for expert
            choice of tokens, that got no expert slot), `expert_fraction`
            (E,) share of assignments per expert before capacity,
            `load_imbalance` (`E * max(expert_fraction)`, 1 is perfect),
            `capacity`, `router_probs` (G, S, E), `aux_losses` by name and,
            for token choice, `expert_index` (G, S, K) and `gates` (G, S, K).

        Example:
        >>> import numpy as np
        >>> moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1)
        >>> stats = moe.routing_stats(np.random.rand(2, 6, 8).astype("float32"))
        >>> stats["expert_fraction"].shape
        (4,)
        """
        x = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not self.built:
            self.build(tuple(x.shape))
        _, group_size = self._check_inputs(x)
        groups = ops.reshape(x, (-1, group_size, x.shape[-1]))
        routing = self.router(groups, training=training, dense=False)
        fraction = ops.convert_to_numpy(routing["expert_fraction"])
        stats = {
            "dropped_fraction": float(ops.convert_to_numpy(routing["dropped_fraction"])),
            "expert_fraction": fraction,
            "load_imbalance": float(self.num_experts * np.max(fraction)),
            "capacity": self.capacity(training, group_size),
            "router_probs": ops.convert_to_numpy(routing["router_probs"]),
            "aux_losses": {
                k: float(ops.convert_to_numpy(v)) for k, v in routing["aux_losses"].items()
            },
        }
        for key in ("expert_index", "gates"):
            if key in routing:
                stats[key] = ops.convert_to_numpy(routing[key])
        return stats

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "intermediate_dim": self.intermediate_dim,
                "top_k": self.top_k,
                "router": self.router_type,
                "capacity_factor": self.capacity_factor,
                "eval_capacity_factor": self.eval_capacity_factor,
                "group_size": self.group_size,
                "activation": self.activation
                if isinstance(self.activation, str)
                else serialize_activation(self.activation),
                "gated": self.gated,
                "dropout": self.dropout,
                "dropout_placement": self.dropout_placement,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "router_initializer": None
                if self.router_initializer is None
                else keras.initializers.serialize(self.router_initializer),
                **self.router.options(),
            }
        )
        return config
