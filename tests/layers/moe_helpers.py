"""Small helpers shared by the SparseMoE layer tests."""

import keras
import numpy as np

from tests.layers import numpy_reference as npref


def to_numpy(x):
    """Backend tensor (any float dtype incl. bfloat16) -> float32/int NumPy."""
    if hasattr(x, "dtype") and "bfloat16" in str(x.dtype):
        x = keras.ops.cast(x, "float32")
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_tokens(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


def set_router_kernel(router, kernel, group_size):
    """Build `router` for (G, group_size, D) groups and set its kernel."""
    kernel = np.asarray(kernel, "float32")
    if not router.built:
        router.build((None, group_size, kernel.shape[0]))
    router.kernel.assign(kernel)
    return router


def expert_weights(experts):
    """The Experts sublayer's weights by name, as float64 NumPy arrays."""
    names = ("kernel_in", "kernel_gate", "bias_in", "kernel_out", "bias_out")
    return {
        n: to_numpy(getattr(experts, n)).astype("float64")
        for n in names
        if hasattr(experts, n)
    }


def reference_routing(moe, groups, training=False, router_kernel=None, token_mask=None):
    """Dense (dispatch, combine) of `moe`'s router for grouped tokens, in NumPy.

    With `token_mask` (G, S), the router sees only the real tokens of each
    group, with the capacity of the full group: padding takes no capacity
    and gets nothing.
    """
    router = moe.router
    kernel = to_numpy(router.kernel) if router_kernel is None else router_kernel
    group_size = groups.shape[1]
    capacity = moe.capacity(training, group_size)
    if moe.router_type == "soft":
        scale = float(to_numpy(router.scale)) if router.normalize else 1.0
        ref = npref.soft(
            groups, kernel, scale, moe.num_experts, router.slots_per_expert, router.normalize,
            token_mask=token_mask,
        )
        return ref["dispatch"], ref["combine"]
    if token_mask is None:
        token_mask = np.ones(groups.shape[:2], bool)
    shape = groups.shape[:2] + (moe.num_experts, capacity)
    dispatch, combine = np.zeros(shape), np.zeros(shape)
    for g in range(groups.shape[0]):
        real = np.flatnonzero(token_mask[g])
        sub = groups[g : g + 1, real]
        if moe.router_type == "token_choice":
            ref = npref.token_choice(sub, kernel, moe.top_k, capacity,
                                     batch_priority=router.batch_priority,
                                     renormalize=router.renormalize_gates)
        else:
            ref = npref.expert_choice(sub, kernel, min(capacity, len(real)))
        dispatch[g, real, :, : ref["dispatch"].shape[-1]] = ref["dispatch"][0]
        combine[g, real, :, : ref["combine"].shape[-1]] = ref["combine"][0]
    return dispatch, combine


def reference_forward(moe, x, router_kernel=None, weights=None, group_size=None,
                      token_mask=None):
    """NumPy forward of a built SparseMoE in inference mode.

    Uses the layer's own weights unless `router_kernel` / `weights` (expert
    weights by name) are given; `group_size` defaults to the layer's for `x`.
    Masked tokens (`token_mask` false) output zero.
    """
    x = np.asarray(x, np.float64)
    if group_size is None:
        tokens = 1 if x.ndim == 2 else x.shape[1]
        group_size = moe.group_size or tokens
    groups = x.reshape(-1, group_size, x.shape[-1])
    mask = None if token_mask is None else np.asarray(token_mask, bool).reshape(-1, group_size)
    dispatch, combine = reference_routing(moe, groups, router_kernel=router_kernel,
                                          token_mask=mask)
    activation = moe.activation if isinstance(moe.activation, str) else "gelu"
    if weights is None:
        weights = expert_weights(moe.experts)
    y = npref.moe_forward(groups, dispatch, combine, weights, activation, moe.gated)
    if mask is not None:
        y = y * mask[..., None]
    return y.reshape(x.shape)


def randomize_weights(layer, seed=0, scale=0.5):
    """Give every trainable weight of `layer` a fixed random value (biases and
    the soft router's scale included), generated with NumPy."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_weights:
        shape = tuple(v.shape)
        if not shape:
            v.assign(np.asarray(1.0 + rng.uniform(0, 1), "float32"))
        else:
            v.assign((rng.normal(size=shape) * scale).astype("float32"))
