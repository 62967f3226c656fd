"""Token choice top-k router (V-MoE / GShard / Switch)."""

import keras
from keras import ops

from keras_sparse_moe.layers import aux_losses
from keras_sparse_moe.layers import backend_random
from keras_sparse_moe.layers import grouped_matmul
from keras_sparse_moe.layers.dispatchers import GatherDispatcher
from keras_sparse_moe.layers.dispatchers import RaggedDispatcher
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.router_registry import register_router
from keras_sparse_moe.layers.routing_ops import slots_from_assignments
from keras_sparse_moe.layers.routing_ops import token_choice_positions
from keras_sparse_moe.layers.routing_ops import top_k
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float

DROPLESS_IMPLS = ("auto", "ragged", "padded")
AUX_LOSS_CONVENTIONS = ("default", "vmoe")


@register_router("token_choice")
@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class TokenChoiceRouter(Router):
    """Each token picks its top-k experts; experts keep at most `capacity`.

    The router probabilities are `softmax(x @ W)` computed in float32. In
    training, Gaussian noise with std `noise_std / num_experts` is added to
    the logits (V-MoE noisy gating) and, optionally, router inputs are
    multiplied by uniform jitter in `[1 - jitter, 1 + jitter]` (Switch).
    Assignments are served first choices first; with `batch_priority=True`
    tokens with a larger top-1 gate are served first (V-MoE Batch Priority
    Routing). Assignments beyond an expert's capacity are dropped: their
    gate becomes 0, so the token gets nothing from that expert (the residual
    connection around the MoE block carries it).

    Args:
        num_experts: int >= 1.
        top_k: int in [1, num_experts].
        capacity_factor: float > 0, or None for dropless routing (capacity =
            group size).
        eval_capacity_factor: float > 0 or None, capacity factor when not
            training (None: same as `capacity_factor`).
        noise_std: float >= 0. Std of the gating noise is
            `noise_std / num_experts` (training only).
        jitter: float in [0, 1). Multiplicative input jitter (training only).
        renormalize_gates: bool. Divide the top-k gates by their sum
            (Mixtral); needed for exact sparse upcycling.
        batch_priority: bool, Batch Priority Routing.
        importance_loss_weight: float >= 0, V-MoE importance loss weight.
        load_loss_weight: float >= 0, V-MoE load loss weight (only active
            when `noise_std > 0`).
        load_balancing_loss_weight: float >= 0, Switch/GShard loss weight.
        z_loss_weight: float >= 0, ST-MoE router z-loss weight.
        kernel_initializer: initializer of the `(dim, num_experts)` kernel.
        seed: int or None, seed of the noise.
        dropless_impl: how the experts run when routing is dropless
            (`capacity_factor=None`, and at inference
            `eval_capacity_factor=None`). `"ragged"`: assignments sorted by
            expert, each expert multiplies only its own tokens (cost
            independent of `num_experts`; JAX and PyTorch only; see
            `RaggedDispatcher`). `"padded"`: the capacity path with capacity
            = group size (`num_experts / top_k` times the work; portable,
            exports to LiteRT). `"auto"` (default): `"ragged"` on JAX and
            PyTorch unless a `keras.distribution` is set, `"padded"`
            otherwise. Both give the same outputs.
        aux_loss_convention: `"default"` or `"vmoe"`, how the auxiliary
            losses are computed. `"default"`: the importance loss on the
            router probabilities used for routing (noisy in training), the
            load-balancing loss on all `top_k` choices (each weighted
            `1 / top_k`), the load loss whenever `noise_std > 0` (also at
            inference, where the noise is zero). `"vmoe"`: as
            google-research/vmoe's `NoisyTopExpertsPerItemRouter`: the
            importance loss on the clean (noise-free) probabilities, the
            load-balancing loss (vmoe's `gshard_loss`) on the top-1 expert
            only, and the load loss in training only.
        capacity, capacity_rounding, capacity_multiple_of, capacity_formula:
            see `Router`; vmoe's token choice is `capacity_multiple_of=4,
            capacity_formula="vmoe"`.

    Call arguments:
        inputs: (G, S, D) grouped tokens.
        training: bool.
        dense: bool, also return the `(G, S, E, C)` `dispatch_mask` and
            `combine_weights`.

    Returns:
        A dict with `expert_index`, `expert_position`, `gates` (G, S, K; 0 for
        dropped assignments), `slot_token` (G, E, C; S marks an empty slot),
        `router_probs` (G, S, E), `aux_losses` (unweighted, by name),
        `aux_loss` (weighted sum), `dropped_fraction` and `expert_fraction`
        (share of assignments per expert, before capacity).

    Example:
    >>> import numpy as np
    >>> router = TokenChoiceRouter(num_experts=4, top_k=2, capacity_factor=1.0)
    >>> out = router(np.random.rand(3, 8, 16).astype("float32"))
    >>> tuple(out["combine_weights"].shape)
    (3, 8, 4, 4)
    """

    def __init__(
        self,
        num_experts,
        top_k=2,
        capacity_factor=1.25,
        eval_capacity_factor=None,
        noise_std=1.0,
        jitter=0.0,
        renormalize_gates=False,
        batch_priority=True,
        importance_loss_weight=0.005,
        load_loss_weight=0.005,
        load_balancing_loss_weight=0.0,
        z_loss_weight=0.0,
        kernel_initializer="glorot_uniform",
        seed=None,
        dropless_impl="auto",
        aux_loss_convention="default",
        **kwargs,
    ):
        super().__init__(
            num_experts=num_experts,
            top_k=top_k,
            capacity_factor=capacity_factor,
            eval_capacity_factor=eval_capacity_factor,
            kernel_initializer=kernel_initializer,
            z_loss_weight=z_loss_weight,
            **kwargs,
        )
        self.noise_std = check_float("noise_std", noise_std, minimum=0.0)
        self.jitter = check_float("jitter", jitter, minimum=0.0)
        if self.jitter >= 1.0:
            raise ValueError(f"Argument `jitter` must be in [0, 1); received jitter={jitter}.")
        self.renormalize_gates = bool(renormalize_gates)
        self.batch_priority = bool(batch_priority)
        self.importance_loss_weight = check_float(
            "importance_loss_weight", importance_loss_weight, minimum=0.0
        )
        self.load_loss_weight = check_float("load_loss_weight", load_loss_weight, minimum=0.0)
        self.load_balancing_loss_weight = check_float(
            "load_balancing_loss_weight", load_balancing_loss_weight, minimum=0.0
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.dropless_impl = check_choice("dropless_impl", dropless_impl, DROPLESS_IMPLS)
        self.aux_loss_convention = check_choice(
            "aux_loss_convention", aux_loss_convention, AUX_LOSS_CONVENTIONS
        )
        if self.dropless_impl == "ragged":
            if self.capacity_factor is not None:
                raise ValueError(
                    "Argument `dropless_impl`='ragged' applies to dropless token choice only "
                    f"(capacity_factor=None); received capacity_factor={capacity_factor!r}. "
                    "Use dropless_impl='auto'."
                )
            if not grouped_matmul.is_supported():
                raise ValueError(
                    "Argument `dropless_impl`='ragged' needs the JAX or PyTorch backend; "
                    f"the current backend is {keras.backend.backend()!r}. Use "
                    "dropless_impl='auto' (ragged where available, padded elsewhere) or "
                    "'padded'."
                )

    def uses_ragged_experts(self, training=False):
        """Whether a call runs the experts on expert-sorted rows (the dropless
        `"ragged"` path, `top_k` rows per token) rather than on padded
        per-expert buffers, on the current backend.

        Example:
        >>> TokenChoiceRouter(num_experts=4, capacity_factor=1.25).uses_ragged_experts()
        False
        """
        if self.fixed_capacity is not None:
            return False
        if self.capacity_factor is None and (training or self.eval_capacity_factor is None):
            if self.dropless_impl != "auto":
                return self.dropless_impl == "ragged"
            return grouped_matmul.is_supported() and keras.distribution.distribution() is None
        return False

    def expert_rows(self, num_groups, group_size, training=False):
        if self.uses_ragged_experts(training):
            return num_groups * group_size * self.top_k
        return super().expert_rows(num_groups, group_size, training)

    def dispatcher(self, routing, group_size, training=False, token_mask=None):
        if self.uses_ragged_experts(training):
            return RaggedDispatcher(
                routing["expert_index"], routing["gates"], self.num_experts, token_mask
            )
        return GatherDispatcher(
            routing["slot_token"],
            expert_index=routing["expert_index"],
            expert_position=routing["expert_position"],
            gates=routing["gates"],
        )

    def route(self, inputs, training=False, token_mask=None):
        group_size = self.static_group_size(inputs)
        x = ops.cast(inputs, "float32")
        if training and self.jitter > 0:
            x = x * backend_random.uniform(
                ops.shape(x), 1.0 - self.jitter, 1.0 + self.jitter, self.seed_generator
            )
        logits = ops.matmul(x, self.kernel)
        noise_std = self.noise_std / self.num_experts
        noisy_logits = logits
        if training and noise_std > 0:
            noisy_logits = logits + noise_std * backend_random.normal(
                ops.shape(logits), self.seed_generator
            )
        probs = ops.softmax(noisy_logits, axis=-1)
        gates, expert_index = top_k(probs, self.top_k)
        expert_index = ops.cast(expert_index, "int32")
        # Batch Priority Routing ranks tokens by their top-1 router probability,
        # before any renormalisation (which would make all top-1 gates 1 at k=1).
        priority = gates
        if self.renormalize_gates:
            gates = gates / ops.sum(gates, axis=-1, keepdims=True)
        batch_priority = self.batch_priority
        mask = None
        if token_mask is not None:
            # Masked tokens are served last (priority -1), so they never take
            # capacity from real tokens; without BPR real tokens keep their
            # order (priority decreasing with the position in the group).
            mask = ops.expand_dims(ops.cast(token_mask, "bool"), -1)  # (G, S, 1)
            if not batch_priority:
                order = 1.0 - ops.arange(group_size, dtype="float32") / group_size
                priority = ops.broadcast_to(
                    ops.reshape(order, (1, group_size, 1)), ops.shape(priority)
                )
                batch_priority = True
            priority = ops.where(mask, priority, -1.0)
            probs = probs * ops.cast(mask, probs.dtype)

        capacity = self.capacity(training, group_size)
        # Masked assignments are counted on a virtual extra expert, so they
        # never push a real (e.g. second-choice) assignment beyond capacity.
        position_index, num_queues = expert_index, self.num_experts
        if mask is not None:
            position_index = ops.where(mask, expert_index, self.num_experts)
            num_queues = self.num_experts + 1
        position = token_choice_positions(
            position_index, priority, num_queues, batch_priority
        )
        keep = position < capacity
        if mask is not None:
            keep = ops.logical_and(keep, mask)
        slot_token = slots_from_assignments(
            expert_index, position, keep, self.num_experts, capacity
        )
        kept_gates = ops.where(keep, gates, ops.zeros_like(gates))

        vmoe = self.aux_loss_convention == "vmoe"
        importance_probs, balance_index = probs, expert_index
        if vmoe:
            # vmoe: importance on the clean gates, load balancing (its
            # `gshard_loss`) on the top-1 expert of the routing gates.
            importance_probs = probs
            if noisy_logits is not logits:
                importance_probs = ops.softmax(logits, axis=-1)
                if mask is not None:
                    importance_probs = importance_probs * ops.cast(mask, probs.dtype)
            balance_index = expert_index[..., :1]
        losses = {
            "importance_loss": aux_losses.importance_loss(importance_probs),
            "load_balancing_loss": aux_losses.load_balancing_loss(
                probs, balance_index, self.num_experts
            ),
            "router_z_loss": aux_losses.router_z_loss(logits),
        }
        total = (
            self.importance_loss_weight * losses["importance_loss"]
            + self.load_balancing_loss_weight * losses["load_balancing_loss"]
            + self.z_loss_weight * losses["router_z_loss"]
        )
        if noise_std > 0 and (training or not vmoe):
            losses["load_loss"] = aux_losses.load_loss(
                logits, noisy_logits, noise_std, self.top_k
            )
            total = total + self.load_loss_weight * losses["load_loss"]

        assigned = ops.sum(ops.one_hot(expert_index, self.num_experts, dtype="float32"), axis=2)
        if mask is not None:
            real = ops.cast(mask, "float32")  # (G, S, 1)
            assigned = assigned * real
            num_assignments = ops.maximum(ops.sum(real), 1.0) * self.top_k
            dropped_fraction = 1.0 - ops.sum(ops.cast(keep, "float32")) / num_assignments
        else:
            num_assignments = ops.cast(ops.size(expert_index), "float32")
            dropped_fraction = 1.0 - ops.mean(ops.cast(keep, "float32"))
        expert_fraction = ops.sum(assigned, axis=(0, 1)) / num_assignments
        return {
            "expert_index": expert_index,
            "expert_position": position,
            "gates": kept_gates,
            "slot_token": slot_token,
            "router_probs": probs,
            "aux_losses": losses,
            "aux_loss": total,
            "dropped_fraction": dropped_fraction,
            "expert_fraction": expert_fraction,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "noise_std": self.noise_std,
                "jitter": self.jitter,
                "renormalize_gates": self.renormalize_gates,
                "batch_priority": self.batch_priority,
                "importance_loss_weight": self.importance_loss_weight,
                "load_loss_weight": self.load_loss_weight,
                "load_balancing_loss_weight": self.load_balancing_loss_weight,
                "seed": self.seed,
                "dropless_impl": self.dropless_impl,
                "aux_loss_convention": self.aux_loss_convention,
            }
        )
        return config
