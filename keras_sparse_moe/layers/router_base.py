"""Common base of the routers: argument checks, capacity, cost, config."""

import inspect

import keras

from keras_sparse_moe.layers.dispatchers import DenseDispatcher
from keras_sparse_moe.layers.routing_ops import CAPACITY_FORMULAS
from keras_sparse_moe.layers.routing_ops import CAPACITY_ROUNDINGS
from keras_sparse_moe.layers.routing_ops import compute_capacity
from keras_sparse_moe.layers.routing_ops import to_dense
from keras_sparse_moe.utils.validation import check_capacity_factor
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_int


class Router(keras.layers.Layer):
    """Base class of the routers.

    A router maps grouped tokens `(G, S, D)` to a routing dictionary. It always
    computes in float32 (the router is numerically sensitive and cheap), even
    under a mixed-precision policy.

    Subclasses implement `route(x, training, token_mask)` returning the
    compact routing dictionary (see `routing_ops`), and may override
    `dispatcher(routing, ...)`, which returns the object that moves tokens to
    the experts and back (`dispatchers.py`; by default a `DenseDispatcher`
    on `to_dense(routing)`). `call(x, training, dense=True)` adds the classic
    `dispatch_mask` / `combine_weights` tensors of shape `(G, S, E, C)`.

    The router also owns its cost arithmetic, which `SparseMoE` and
    `keras_sparse_moe.profile` ask for: `capacity`, `experts_per_token`,
    `expert_rows`, `num_parameters` and `flops`.

    A new router is a subclass in its own file registered by name with
    `register_router` (see `router_registry.py`); every `__init__` argument
    is then an option that `SparseMoE` forwards from its keyword arguments
    and writes back in its config.

    Args:
        num_experts: int >= 1.
        top_k: int in [1, num_experts], experts per token (expert choice:
            average experts per token, used for the capacity).
        capacity_factor: float > 0 or None (dropless).
        eval_capacity_factor: float > 0 or None (same as `capacity_factor`),
            used when `training` is false.
        kernel_initializer: initializer of the router projection.
        z_loss_weight: float >= 0, weight of the ST-MoE router z-loss.
        capacity: int >= 1 or None. An explicit per-expert capacity per
            group, used instead of `capacity_factor` (in training, and at
            inference unless `eval_capacity_factor` is set); vmoe's
            dispatcher `capacity` option.
        capacity_rounding: `"ceil"` (default) or `"round"` (Python's round,
            half to even), how `group_size * top_k * capacity_factor /
            num_experts` becomes an int (vmoe's `capacity_ceil_or_round`).
        capacity_multiple_of: int >= 1, round the capacity up to a multiple
            of it (vmoe's `capacity_multiple_of`, 4 in vmoe's token and
            expert choice routers). Default 1.
        capacity_formula: `"clipped"` (default: clip the capacity to
            `[1, group_size]`, with a 1e-9 tolerance against float round-off
            before `ceil`) or `"vmoe"` (vmoe's `compute_capacity` exactly: no
            tolerance, no cap at the group size, an error below 1). See
            `routing_ops.compute_capacity`.
    """

    # Set by `register_router`: the name this class is registered under.
    router_name = None

    def __init__(
        self,
        num_experts,
        top_k=1,
        capacity_factor=1.25,
        eval_capacity_factor=None,
        kernel_initializer="glorot_uniform",
        z_loss_weight=0.0,
        capacity=None,
        capacity_rounding="ceil",
        capacity_multiple_of=1,
        capacity_formula="clipped",
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1)
        if self.top_k > self.num_experts:
            raise ValueError(
                f"Argument `top_k` must be at most `num_experts` ({num_experts}); "
                f"received top_k={top_k}."
            )
        self.capacity_factor = check_capacity_factor("capacity_factor", capacity_factor)
        self.eval_capacity_factor = check_capacity_factor(
            "eval_capacity_factor", eval_capacity_factor
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.z_loss_weight = float(z_loss_weight)
        if self.z_loss_weight < 0:
            raise ValueError(
                f"Argument `z_loss_weight` must be >= 0; received {z_loss_weight}."
            )
        # `capacity` is the name of the method: the explicit value is kept as
        # `fixed_capacity` (and written back as `capacity` in the config).
        self.fixed_capacity = None if capacity is None else check_int(
            "capacity", capacity, minimum=1
        )
        self.capacity_rounding = check_choice(
            "capacity_rounding", capacity_rounding, CAPACITY_ROUNDINGS
        )
        self.capacity_multiple_of = check_int(
            "capacity_multiple_of", capacity_multiple_of, minimum=1
        )
        self.capacity_formula = check_choice(
            "capacity_formula", capacity_formula, CAPACITY_FORMULAS
        )
        self.group_size = None
        self.model_dim = None

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects grouped tokens of shape "
                f"(groups, group_size, dim) with a known dim; "
                f"received input shape {tuple(input_shape)}."
            )
        # The weights only depend on `dim`; the group size (and so the
        # capacity) is read from each call's static shape.
        self.group_size = None if input_shape[1] is None else int(input_shape[1])
        self.model_dim = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.model_dim, self.num_logits()),
            initializer=self.kernel_initializer,
        )

    def num_logits(self):
        """Width of the router projection (one logit per expert by default)."""
        return self.num_experts

    def capacity(self, training=False, group_size=None):
        """Static per-expert capacity for `group_size` tokens per group
        (default: the group size the router was built with)."""
        group_size = group_size or self.group_size
        if group_size is None:
            raise ValueError(
                "The router is not built with a group size yet (it does not know its group "
                "size): call it on data first or pass `group_size`."
            )
        factor = self.capacity_factor
        if not training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        elif self.fixed_capacity is not None:
            return self.fixed_capacity
        return compute_capacity(
            group_size, self.num_experts, self.top_k, factor,
            rounding=self.capacity_rounding, multiple_of=self.capacity_multiple_of,
            formula=self.capacity_formula,
        )

    def experts_per_token(self, group_size=None, training=False):
        """Experts a token's output depends on (the "active" experts): `top_k`
        for routers where each token picks its experts."""
        return self.top_k

    def expert_rows(self, num_groups, group_size, training=False):
        """Expert MLP rows computed for `num_groups` groups of `group_size`
        tokens: every capacity slot, filled or not."""
        return self.num_experts * num_groups * self.capacity(training, group_size)

    def uses_ragged_experts(self, training=False):
        """Whether the experts run on expert-sorted rows (`RaggedDispatcher`)
        rather than on `(E, G * C, D)` buffers."""
        return False

    def num_parameters(self, dim):
        """Trainable parameters of the router for `dim`-wide tokens (the
        `(dim, num_logits)` projection)."""
        return int(dim) * self.num_logits()

    def flops(self, num_tokens, dim):
        """Forward FLOPs of routing `num_tokens` tokens of width `dim` (the
        projection: 1 multiply-add = 2 FLOPs)."""
        return 2 * int(num_tokens) * int(dim) * self.num_logits()

    def dispatcher(self, routing, group_size, training=False, token_mask=None):
        """The `Dispatcher` moving tokens for this `routing` (from `route`).

        Args:
            routing: the dict returned by `route`.
            group_size: int, tokens per group.
            training: bool.
            token_mask: optional bool (G, S).
        """
        dispatch, combine = to_dense(
            routing, group_size, self.num_experts, self.capacity(training, group_size)
        )
        return DenseDispatcher(dispatch, combine)

    @classmethod
    def option_names(cls):
        """Names of the constructor arguments of this router class (its own
        and its `Router` base classes', without `**kwargs`)."""
        names = set()
        for klass in cls.__mro__:
            if not (isinstance(klass, type) and issubclass(klass, Router)):
                continue
            for parameter in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    names.add(parameter.name)
        return names

    def options(self):
        """The router's config without the arguments `SparseMoE` sets itself
        (`num_experts`, `top_k`, capacity factors, the kernel initializer)
        and the layer bookkeeping (`name`, `trainable`, `dtype`)."""
        config = self.get_config()
        for key in MOE_ARGUMENTS + ("name", "trainable", "dtype"):
            config.pop(key, None)
        return config

    @staticmethod
    def static_group_size(inputs):
        """The (static) number of tokens per group of `inputs` (G, S, D)."""
        group_size = inputs.shape[1]
        if group_size is None:
            raise ValueError(
                "Routers need a static number of tokens per group (the capacity is a "
                f"Python int); received grouped tokens of shape {tuple(inputs.shape)}."
            )
        return int(group_size)

    def call(self, inputs, training=None, dense=True, token_mask=None):
        if token_mask is not None and tuple(token_mask.shape) != tuple(inputs.shape[:2]):
            raise ValueError(
                f"Argument `token_mask` must have shape (groups, group_size) = "
                f"{tuple(inputs.shape[:2])}; received shape {tuple(token_mask.shape)}."
            )
        routing = self.route(inputs, training=bool(training), token_mask=token_mask)
        if dense:
            group_size = self.static_group_size(inputs)
            dispatch, combine = to_dense(
                routing, group_size, self.num_experts, self.capacity(bool(training), group_size)
            )
            routing["dispatch_mask"] = dispatch
            routing["combine_weights"] = combine
        return routing

    def route(self, inputs, training=False, token_mask=None):
        """Compact routing of grouped tokens (see the subclasses).

        `token_mask` (G, S), optional: false marks tokens (e.g. padding) that
        must not be routed: they take no capacity and get zero gates.

        Returns a dict with at least `router_probs` (G, S, E), `aux_losses`
        (unweighted, by name), `aux_loss` (weighted sum, added by `SparseMoE`
        in training), `dropped_fraction` and `expert_fraction` (E,), plus
        what `dispatcher` reads (for the default one: `slot_token` and
        `expert_index`/`gates` or `slot_gates`, or `dispatch_weights` and
        `combine_weights`).
        """
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            {
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "capacity_factor": self.capacity_factor,
                "eval_capacity_factor": self.eval_capacity_factor,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "z_loss_weight": self.z_loss_weight,
                "capacity": self.fixed_capacity,
                "capacity_rounding": self.capacity_rounding,
                "capacity_multiple_of": self.capacity_multiple_of,
                "capacity_formula": self.capacity_formula,
            }
        )
        return config


# Arguments of `SparseMoE` itself that it passes to every router.
MOE_ARGUMENTS = (
    "num_experts", "top_k", "capacity_factor", "eval_capacity_factor", "kernel_initializer",
)
