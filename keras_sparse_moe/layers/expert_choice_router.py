"""Expert choice router (Zhou et al. 2022)."""

import keras
from keras import ops

from keras_sparse_moe.layers import aux_losses
from keras_sparse_moe.layers.dispatchers import GatherDispatcher
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.router_registry import register_router
from keras_sparse_moe.layers.routing_ops import expert_choice_slots
from keras_sparse_moe.layers.routing_ops import to_dense


@register_router("expert_choice")
@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class ExpertChoiceRouter(Router):
    """Each expert takes its `capacity` best tokens of the group.

    Router scores are `softmax(x @ W)` over experts (float32). Expert `e`
    fills its `C = ceil(S * top_k * capacity_factor / E)` slots with the
    tokens of highest score for `e`; a token can be taken by several experts
    or by none (it then gets nothing from the MoE; the residual carries it).
    Load is perfectly balanced by construction, so only the z-loss applies.

    Args:
        num_experts: int >= 1.
        top_k: int >= 1, average number of experts per token (Zhou et al.'s
            capacity factor `c`, together with `capacity_factor`).
        capacity_factor: float > 0.
        eval_capacity_factor: float > 0 or None.
        z_loss_weight: float >= 0.
        kernel_initializer: initializer of the router kernel.

    Returns (call):
        A dict with `slot_token` (G, E, C), `slot_gates` (G, E, C),
        `router_probs`, `aux_losses`, `aux_loss`, `dropped_fraction` (share of
        tokens no expert took) and `expert_fraction`.

    Example:
    >>> import numpy as np
    >>> router = ExpertChoiceRouter(num_experts=4, top_k=1, capacity_factor=1.0)
    >>> out = router(np.random.rand(2, 8, 16).astype("float32"))
    >>> tuple(out["slot_token"].shape)
    (2, 4, 2)
    """

    def __init__(self, num_experts, top_k=1, capacity_factor=1.0, **kwargs):
        if capacity_factor is None:
            raise ValueError(
                "Argument `capacity_factor` must be a number > 0 for expert choice "
                "routing (every expert fills a fixed number of slots); received None."
            )
        super().__init__(num_experts, top_k=top_k, capacity_factor=capacity_factor, **kwargs)

    def experts_per_token(self, group_size=None, training=False):
        """The average number of experts that take a token,
        `num_experts * capacity / group_size`."""
        group_size = group_size or self.group_size
        return self.num_experts * self.capacity(training, group_size) / group_size

    def dispatcher(self, routing, group_size, training=False, token_mask=None):
        # A token sits in any number of slots: gather into the slots, combine
        # with the dense (G, S, E, C) slot gates.
        _, combine = to_dense(
            routing, group_size, self.num_experts, self.capacity(training, group_size)
        )
        return GatherDispatcher(routing["slot_token"], combine_weights=combine)

    def route(self, inputs, training=False, token_mask=None):
        group_size = self.static_group_size(inputs)
        logits = ops.matmul(ops.cast(inputs, "float32"), self.kernel)
        probs = ops.softmax(logits, axis=-1)
        capacity = self.capacity(training, group_size)
        scores = probs
        if token_mask is not None:
            # Masked tokens score -1: experts only take them once every real
            # token is taken, and their gates are zeroed below.
            real = ops.expand_dims(ops.cast(token_mask, "bool"), -1)
            scores = ops.where(real, probs, -1.0)
            probs = probs * ops.cast(real, probs.dtype)
        slot_token, slot_gates = expert_choice_slots(scores, capacity)
        flat_slots = ops.reshape(slot_token, (-1, self.num_experts * capacity))
        if token_mask is not None:
            slot_real = ops.take_along_axis(ops.cast(token_mask, "float32"), flat_slots, axis=1)
            slot_real = ops.reshape(slot_real, ops.shape(slot_gates))
            slot_gates = slot_gates * slot_real
        # Tokens taken by at least one expert (real tokens only, with a mask).
        taken = ops.max(ops.one_hot(flat_slots, group_size, dtype="float32"), axis=1)
        if token_mask is not None:
            real_tokens = ops.cast(token_mask, "float32")
            dropped = 1.0 - ops.sum(taken * real_tokens) / ops.maximum(ops.sum(real_tokens), 1.0)
        else:
            dropped = 1.0 - ops.mean(taken)
        losses = {"router_z_loss": aux_losses.router_z_loss(logits)}
        return {
            "slot_token": slot_token,
            "slot_gates": slot_gates,
            "router_probs": probs,
            "aux_losses": losses,
            "aux_loss": self.z_loss_weight * losses["router_z_loss"],
            "dropped_fraction": dropped,
            "expert_fraction": ops.ones((self.num_experts,), "float32") / self.num_experts,
        }
