"""Soft MoE router (Puigcerver et al. 2023)."""

import keras
from keras import ops

from keras_sparse_moe.layers import aux_losses
from keras_sparse_moe.layers import backend_random
from keras_sparse_moe.layers.dispatchers import Bfloat16Dispatcher
from keras_sparse_moe.layers.dispatchers import DenseDispatcher
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.router_registry import register_router
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


@register_router("soft")
@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SoftRouter(Router):
    """Soft MoE: every slot is a convex combination of all tokens.

    With per-slot parameters `phi` (D, E * n), logits are
    `l2norm(x) @ (scale * l2norm(phi))` (the paper's normalisation, which
    keeps the softmaxes well conditioned at large width). The dispatch
    weights are a softmax over the tokens of the group (each slot mixes
    tokens), the combine weights a softmax over all slots (each token mixes
    slot outputs). No token is dropped; the cost grows with the number of
    slots `E * n`, which is the point of choosing `n`.

    Args:
        num_experts: int >= 1.
        slots_per_expert: int >= 1 (`n`), the capacity of each expert; or
            None to derive it from `capacity_factor` and the group size seen
            by `build` as vmoe's Soft MoE does when its `num_slots` is None:
            `round(group_size * capacity_factor / num_experts)` (Python's
            round, half to even; an error below 1).
        capacity_factor: float > 0, used only when `slots_per_expert` is
            None.
        normalize: bool, apply the l2 normalisation and learned scale.
        bfloat16_dispatch: bool, round the tokens entering the slots and the
            expert outputs entering the combine to bfloat16 (the weights and
            sums stay float32), as vmoe's Soft MoE always does (its
            `Bfloat16Dispatcher`). Default False (float32 throughout);
            checkpoints converted from vmoe set it.
        noise_std: float >= 0, std of Gaussian noise added to the logits
            in training (before both softmaxes), as vmoe's Soft MoE
            `SoftRouter(noise_std=)` does. Default 0 (no noise, no random
            state).
        seed: int or None, seed of the noise.
        z_loss_weight: float >= 0 (z-loss of the dispatch logits, taken
            without the noise).
        kernel_initializer: initializer of `phi`.

    Returns (call):
        A dict with `dispatch_weights` and `combine_weights` (G, S, E, n),
        `router_probs` (combine weights summed per expert), `aux_losses`,
        `aux_loss`, `dropped_fraction` (always 0) and `expert_fraction`.

    Example:
    >>> import numpy as np
    >>> router = SoftRouter(num_experts=4, slots_per_expert=2)
    >>> out = router(np.random.rand(2, 8, 16).astype("float32"))
    >>> tuple(out["dispatch_weights"].shape)
    (2, 8, 4, 2)
    """

    def __init__(self, num_experts, slots_per_expert=1, normalize=True,
                 kernel_initializer="lecun_normal", capacity_factor=1.0,
                 bfloat16_dispatch=False, noise_std=0.0, seed=None, **kwargs):
        kwargs.pop("top_k", None)
        kwargs.pop("eval_capacity_factor", None)
        for key in ("capacity", "capacity_rounding", "capacity_multiple_of", "capacity_formula"):
            kwargs.pop(key, None)
        if slots_per_expert is None:
            if capacity_factor is None:
                raise ValueError(
                    "SoftRouter needs `slots_per_expert` or a `capacity_factor` > 0 to derive "
                    "it from; received slots_per_expert=None and capacity_factor=None."
                )
        else:
            capacity_factor = 1.0
        super().__init__(num_experts, top_k=1, capacity_factor=capacity_factor,
                         kernel_initializer=kernel_initializer, capacity_rounding="round",
                         capacity_formula="vmoe", **kwargs)
        self.slots_per_expert_arg = (
            None if slots_per_expert is None
            else check_int("slots_per_expert", slots_per_expert, minimum=1)
        )
        self.slots_per_expert = self.slots_per_expert_arg
        self.normalize = bool(normalize)
        if not isinstance(bfloat16_dispatch, bool):
            raise ValueError(
                "Argument `bfloat16_dispatch` must be True or False; received "
                f"bfloat16_dispatch={bfloat16_dispatch!r}."
            )
        self.bfloat16_dispatch = bfloat16_dispatch
        self.noise_std = check_float("noise_std", noise_std, minimum=0.0)
        self.seed = seed
        if self.noise_std > 0:  # no random state (and no extra variable) without noise
            self.seed_generator = keras.random.SeedGenerator(seed)

    def num_logits(self):
        if self.slots_per_expert is None:
            raise ValueError(
                "SoftRouter(slots_per_expert=None) knows its number of slots once built with a "
                "group size: build it first or give `slots_per_expert`."
            )
        return self.num_experts * self.slots_per_expert

    def build(self, input_shape):
        if self.slots_per_expert_arg is None:
            if len(input_shape) != 3 or input_shape[1] is None:
                raise ValueError(
                    "SoftRouter(slots_per_expert=None) derives its slots from the group size, "
                    f"which must be static; received input shape {tuple(input_shape)}."
                )
            self.slots_per_expert = Router.capacity(self, True, int(input_shape[1]))
        super().build(input_shape)
        if self.normalize:
            self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def capacity(self, training=False, group_size=None):
        if self.slots_per_expert is None:
            return Router.capacity(self, True, group_size)
        return self.slots_per_expert

    def experts_per_token(self, group_size=None, training=False):
        """All experts: every slot mixes all tokens of the group and every
        token mixes all slots (its *compute* per token is
        `num_experts * slots_per_expert / group_size` experts)."""
        return self.num_experts

    def num_parameters(self, dim):
        return int(dim) * self.num_logits() + (1 if self.normalize else 0)

    def flops(self, num_tokens, dim):
        """The projection, plus the dispatch (each slot mixes the tokens)
        and combine (each token mixes the slots) products: two more
        `(S x E*n)` by `D` products per group."""
        mixing = 2 * 2 * int(num_tokens) * self.num_logits() * int(dim)
        return super().flops(num_tokens, dim) + mixing

    def dispatcher(self, routing, group_size, training=False, token_mask=None):
        dispatcher = DenseDispatcher(routing["dispatch_weights"], routing["combine_weights"])
        return Bfloat16Dispatcher(dispatcher) if self.bfloat16_dispatch else dispatcher

    def route(self, inputs, training=False, token_mask=None):
        group_size = self.static_group_size(inputs)
        x = ops.cast(inputs, "float32")
        phi = self.kernel
        if self.normalize:
            x = x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + 1e-6)
            phi = self.scale * phi / ops.sqrt(
                ops.sum(ops.square(phi), axis=0, keepdims=True) + 1e-6
            )
        clean_logits = logits = ops.matmul(x, phi)  # (G, S, E*n)
        if training and self.noise_std > 0:
            logits = logits + self.noise_std * backend_random.normal(
                ops.shape(logits), self.seed_generator
            )
        dispatch_logits = logits
        if token_mask is not None:
            # Slots mix real tokens only.
            real = ops.expand_dims(ops.cast(token_mask, "bool"), -1)
            dispatch_logits = ops.where(real, logits, -1e9)
        dispatch = ops.softmax(dispatch_logits, axis=1)
        combine = ops.softmax(logits, axis=-1)
        if token_mask is not None:
            combine = combine * ops.cast(real, combine.dtype)
        shape = (-1, group_size, self.num_experts, self.slots_per_expert)
        combine_4d = ops.reshape(combine, shape)
        probs = ops.sum(combine_4d, axis=-1)
        if token_mask is None:
            expert_fraction = ops.mean(probs, axis=(0, 1))
        else:  # the mean over real tokens (masked ones have zero probabilities)
            real_tokens = ops.maximum(ops.sum(ops.cast(token_mask, probs.dtype)), 1.0)
            expert_fraction = ops.sum(probs, axis=(0, 1)) / real_tokens
        losses = {"router_z_loss": aux_losses.router_z_loss(clean_logits)}
        return {
            "dispatch_weights": ops.reshape(dispatch, shape),
            "combine_weights": combine_4d,
            "router_probs": probs,
            "aux_losses": losses,
            "aux_loss": self.z_loss_weight * losses["router_z_loss"],
            "dropped_fraction": ops.zeros((), "float32"),
            "expert_fraction": expert_fraction,
        }

    def get_config(self):
        config = super().get_config()
        for key in ("top_k", "capacity_factor", "eval_capacity_factor", "capacity",
                    "capacity_rounding", "capacity_multiple_of", "capacity_formula"):
            config.pop(key, None)
        config.update(
            {"slots_per_expert": self.slots_per_expert_arg, "normalize": self.normalize,
             "bfloat16_dispatch": self.bfloat16_dispatch, "noise_std": self.noise_std,
             "seed": self.seed}
        )
        if self.slots_per_expert_arg is None:
            config["capacity_factor"] = self.capacity_factor
        return config
