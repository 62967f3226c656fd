"""The sparse mixture-of-experts layer."""

import keras
import numpy as np
from keras import ops

from keras_sparse_moe.distribution.constraints import constrain_expert_tensor
from keras_sparse_moe.distribution.constraints import expert_parallel_active
from keras_sparse_moe.layers import grouped_matmul
from keras_sparse_moe.layers.dispatch import dense_combine
from keras_sparse_moe.layers.dispatch import dense_dispatch
from keras_sparse_moe.layers.dispatch import gather_combine
from keras_sparse_moe.layers.dispatch import gather_dispatch
from keras_sparse_moe.layers.expert_choice_router import ExpertChoiceRouter
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_dispatch
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_dispatch
from keras_sparse_moe.layers.experts import Experts
from keras_sparse_moe.layers.ragged_experts import ragged_combine
from keras_sparse_moe.layers.ragged_experts import ragged_dispatch
from keras_sparse_moe.layers.ragged_experts import sort_assignments
from keras_sparse_moe.layers.routing_ops import to_dense
from keras_sparse_moe.layers.soft_router import SoftRouter
from keras_sparse_moe.layers.token_choice_router import TokenChoiceRouter
from keras_sparse_moe.utils.validation import check_capacity_factor
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_int

ROUTERS = ("token_choice", "expert_choice", "soft")
DROPLESS_IMPLS = ("auto", "ragged", "padded")


def dropless_path_is_ragged(router, capacity_factor, eval_capacity_factor, dropless_impl,
                            training):
    """Whether a `SparseMoE` with these arguments runs its experts on
    expert-sorted rows (the dropless `"ragged"` path, `N * top_k` expert rows)
    rather than on padded per-expert buffers, on the current backend.

    Example:
    >>> dropless_path_is_ragged("token_choice", 1.25, None, "auto", training=True)
    False
    """
    if router != "token_choice" or capacity_factor is not None:
        return False
    if not training and eval_capacity_factor is not None:
        return False  # capacity-limited at inference
    if dropless_impl != "auto":
        return dropless_impl == "ragged"
    return grouped_matmul.is_supported() and keras.distribution.distribution() is None


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

    Routers (`router=`):

    - `"token_choice"`: top-k softmax router (V-MoE/GShard/Switch) with noisy
      gating, jitter, optional gate renormalisation and Batch Priority
      Routing. Overflowing assignments are dropped (the token gets zero from
      that expert; the residual around the block carries it).
      `capacity_factor=None` is *dropless*: every assignment is processed
      (see `dropless_impl`).
    - `"expert_choice"`: each expert picks its best tokens (Zhou et al. 2022).
    - `"soft"`: Soft MoE slots (Puigcerver et al. 2023), no dropping.

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
        router: one of `"token_choice"`, `"expert_choice"`, `"soft"`.
        capacity_factor: float > 0, or None for dropless token choice.
        eval_capacity_factor: float > 0 or None (same as training); the
            capacity factor used at inference.
        group_size: int or None. Tokens per routing group; must divide the
            number of tokens per example, or be a multiple of it (then the
            batch must be divisible into groups).
        activation: expert activation.
        gated: bool, gated experts (SwiGLU with `activation="silu"`).
        dropout: float in [0, 1), dropout inside the experts.
        use_bias: bool, biases in the experts.
        noise_std: float >= 0, token-choice gating noise (std = noise_std /
            num_experts, training only).
        jitter: float in [0, 1), token-choice multiplicative input jitter.
        renormalize_gates: bool, token choice: renormalise top-k gates.
        batch_priority: bool, token choice: Batch Priority Routing.
        slots_per_expert: int >= 1, soft router slots per expert.
        importance_loss_weight, load_loss_weight, load_balancing_loss_weight,
            z_loss_weight: floats >= 0, auxiliary loss weights.
        kernel_initializer: initializer of the expert kernels.
        router_initializer: initializer of the router kernel.
        seed: int or None, seed of the router noise.
        dropless_impl: how dropless token choice (`capacity_factor=None`,
            and at inference `eval_capacity_factor=None`) runs the experts.
            `"ragged"`: assignments sorted by expert, each expert multiplies
            only its own tokens (cost independent of `num_experts`; JAX and
            PyTorch only). `"padded"`: the capacity path with capacity =
            group size (every expert gets a buffer for the whole group:
            `num_experts / top_k` times the work; portable, exports to
            LiteRT). `"auto"` (default): `"ragged"` on JAX and PyTorch
            unless a `keras.distribution` is set, `"padded"` otherwise.
            Both give the same outputs.

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
        noise_std=1.0,
        jitter=0.0,
        renormalize_gates=False,
        batch_priority=True,
        slots_per_expert=1,
        importance_loss_weight=0.005,
        load_loss_weight=0.005,
        load_balancing_loss_weight=0.0,
        z_loss_weight=0.0,
        kernel_initializer="glorot_uniform",
        router_initializer=None,
        seed=None,
        dropless_impl="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.intermediate_dim = check_int("intermediate_dim", intermediate_dim, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1)
        if self.top_k > self.num_experts:
            raise ValueError(
                f"Argument `top_k` must be between 1 and num_experts={num_experts}; "
                f"received top_k={top_k}."
            )
        self.router_type = check_choice("router", router, ROUTERS)
        self.capacity_factor = check_capacity_factor("capacity_factor", capacity_factor)
        self.eval_capacity_factor = check_capacity_factor(
            "eval_capacity_factor", eval_capacity_factor
        )
        self.group_size = (
            None if group_size is None else check_int("group_size", group_size, minimum=1)
        )
        self.activation = activation
        self.gated = bool(gated)
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        self.noise_std = noise_std
        self.jitter = jitter
        self.renormalize_gates = bool(renormalize_gates)
        self.batch_priority = bool(batch_priority)
        self.slots_per_expert = check_int("slots_per_expert", slots_per_expert, minimum=1)
        self.importance_loss_weight = importance_loss_weight
        self.load_loss_weight = load_loss_weight
        self.load_balancing_loss_weight = load_balancing_loss_weight
        self.z_loss_weight = z_loss_weight
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.router_initializer = (
            None if router_initializer is None else keras.initializers.get(router_initializer)
        )
        self.seed = seed
        self.dropless_impl = check_choice("dropless_impl", dropless_impl, DROPLESS_IMPLS)
        if self.dropless_impl == "ragged":
            if self.router_type != "token_choice" or self.capacity_factor is not None:
                raise ValueError(
                    "Argument `dropless_impl`='ragged' applies to dropless token choice only "
                    "(router='token_choice', capacity_factor=None); received "
                    f"router={router!r}, capacity_factor={capacity_factor!r}. Use "
                    "dropless_impl='auto'."
                )
            if not grouped_matmul.is_supported():
                raise ValueError(
                    "Argument `dropless_impl`='ragged' needs the JAX or PyTorch backend; "
                    f"the current backend is {keras.backend.backend()!r}. Use "
                    "dropless_impl='auto' (ragged where available, padded elsewhere) or "
                    "'padded'."
                )

        router_kwargs = {"name": "router", "z_loss_weight": z_loss_weight}
        if self.router_initializer is not None:
            router_kwargs["kernel_initializer"] = self.router_initializer
        if self.router_type == "token_choice":
            self.router = TokenChoiceRouter(
                num_experts=self.num_experts,
                top_k=self.top_k,
                capacity_factor=self.capacity_factor,
                eval_capacity_factor=self.eval_capacity_factor,
                noise_std=noise_std,
                jitter=jitter,
                renormalize_gates=renormalize_gates,
                batch_priority=batch_priority,
                importance_loss_weight=importance_loss_weight,
                load_loss_weight=load_loss_weight,
                load_balancing_loss_weight=load_balancing_loss_weight,
                seed=seed,
                **router_kwargs,
            )
        elif self.router_type == "expert_choice":
            self.router = ExpertChoiceRouter(
                num_experts=self.num_experts,
                top_k=self.top_k,
                capacity_factor=self.capacity_factor,
                eval_capacity_factor=self.eval_capacity_factor,
                **router_kwargs,
            )
        else:
            self.router = SoftRouter(
                num_experts=self.num_experts,
                slots_per_expert=self.slots_per_expert,
                **router_kwargs,
            )
        self.experts = Experts(
            num_experts=self.num_experts,
            intermediate_dim=self.intermediate_dim,
            activation=activation,
            gated=gated,
            dropout=dropout,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="experts",
        )
        self._tokens_per_example = None
        self._input_rank = None

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
        """Routing group size for `tokens` tokens per example (validated)."""
        group_size = self.group_size or tokens
        if tokens % group_size != 0 and group_size % tokens != 0:
            raise ValueError(
                f"Argument `group_size`={self.group_size} must divide the number of tokens "
                f"per example ({tokens}) or be a multiple of it; allowed for example: "
                f"{sorted(d for d in range(1, tokens + 1) if tokens % d == 0)} or "
                f"{[tokens * m for m in (2, 4, 8)]}."
            )
        return group_size

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
                f"x tokens={tokens}) cannot be divided into groups of "
                f"group_size={group_size}; use a batch size that is a multiple of "
                f"{group_size // tokens}."
            )
        if token_mask is not None and tuple(token_mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"Argument `token_mask` must have the input's shape without the feature "
                f"axis, {tuple(x.shape[:-1])}; received shape {tuple(token_mask.shape)}."
            )
        return tokens, group_size

    def uses_ragged_experts(self, training=False):
        """Whether a call runs the experts on expert-sorted rows (dropless
        `"ragged"` path) rather than on padded per-expert buffers."""
        return dropless_path_is_ragged(
            self.router_type, self.capacity_factor, self.eval_capacity_factor,
            self.dropless_impl, training,
        )

    def _route(self, x, training, group_size, token_mask=None):
        """Expert outputs combined per token, and the routing dict."""
        dim = x.shape[-1]
        groups = ops.reshape(x, (-1, group_size, dim))
        mask = None if token_mask is None else ops.reshape(token_mask, (-1, group_size))
        routing = self.router(groups, training=training, dense=False, token_mask=mask)
        if self.uses_ragged_experts(training):
            # Dropless: sort the assignments by expert; every expert only
            # multiplies its own tokens (no padding to the group size).
            sorting = sort_assignments(
                ops.reshape(routing["expert_index"], (-1, self.top_k)),
                self.num_experts,
                None if token_mask is None else ops.reshape(token_mask, (-1,)),
            )
            expert_inputs = ragged_dispatch(ops.reshape(x, (-1, dim)), sorting)
            expert_outputs = self.experts(
                expert_inputs, training=training, group_sizes=sorting["group_sizes"]
            )
            combined = ragged_combine(
                expert_outputs, sorting, ops.reshape(routing["gates"], (-1, self.top_k))
            )
            return ops.reshape(combined, (-1, group_size, dim)), routing
        capacity = self.capacity(training, group_size)
        if expert_parallel_active():
            # Expert parallelism (JAX): dispatch and combine within each
            # group, so tokens travel by all-to-all (layers/grouped_dispatch.py).
            batch = x.shape[0]
            if self.router_type == "soft":
                expert_inputs = grouped_dense_dispatch(groups, routing["dispatch_weights"], batch)
            else:
                expert_inputs = grouped_gather_dispatch(groups, routing["slot_token"], batch)
            expert_outputs = self.experts(expert_inputs, training=training)
            if self.router_type == "token_choice":
                combined = grouped_gather_combine(
                    expert_outputs, routing["expert_index"], routing["expert_position"],
                    routing["gates"], capacity,
                )
            else:
                _, combine = to_dense(routing, group_size, self.num_experts, capacity)
                combined = grouped_dense_combine(expert_outputs, combine)
            return combined, routing
        if self.router_type == "soft":
            expert_inputs = dense_dispatch(groups, routing["dispatch_weights"])
        else:
            expert_inputs = gather_dispatch(groups, routing["slot_token"])
        expert_inputs = constrain_expert_tensor(expert_inputs)  # (E, G*C, D) on "expert"
        expert_outputs = constrain_expert_tensor(self.experts(expert_inputs, training=training))
        if self.router_type == "token_choice":
            combined = gather_combine(
                expert_outputs,
                routing["expert_index"],
                routing["expert_position"],
                routing["gates"],
                capacity,
            )
        else:
            if self.router_type == "soft":
                combine = routing["combine_weights"]
            else:
                _, combine = to_dense(routing, group_size, self.num_experts, capacity)
            combined = dense_combine(expert_outputs, combine)
        return combined, routing

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
                else keras.activations.serialize(self.activation),
                "gated": self.gated,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "noise_std": self.noise_std,
                "jitter": self.jitter,
                "renormalize_gates": self.renormalize_gates,
                "batch_priority": self.batch_priority,
                "slots_per_expert": self.slots_per_expert,
                "importance_loss_weight": self.importance_loss_weight,
                "load_loss_weight": self.load_loss_weight,
                "load_balancing_loss_weight": self.load_balancing_loss_weight,
                "z_loss_weight": self.z_loss_weight,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "router_initializer": None
                if self.router_initializer is None
                else keras.initializers.serialize(self.router_initializer),
                "seed": self.seed,
                "dropless_impl": self.dropless_impl,
            }
        )
        return config
