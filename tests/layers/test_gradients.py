"""Gradients reach the router and the experts, and are the right ones."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import SparseMoE
from tests.layers.grad_utils import loss_and_gradients
from tests.layers.moe_helpers import expert_weights
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import to_numpy

NO_AUX = dict(importance_loss_weight=0.0, load_loss_weight=0.0,
              load_balancing_loss_weight=0.0, z_loss_weight=0.0, noise_std=0.0)

ROUTERS = {
    "token_choice": dict(router="token_choice", top_k=2, capacity_factor=0.75, **NO_AUX),
    "expert_choice": dict(router="expert_choice", top_k=2, capacity_factor=1.0,
                          z_loss_weight=0.0),
    "soft": dict(router="soft", slots_per_expert=2, z_loss_weight=0.0),
}


def _moe(case, seed=0, **overrides):
    kwargs = dict(num_experts=4, intermediate_dim=8)
    kwargs.update(ROUTERS[case])
    kwargs.update(overrides)
    moe = SparseMoE(**kwargs)
    x = random_tokens((2, 8, 6), seed=seed)
    moe.build(x.shape)
    randomize_weights(moe, seed=seed + 1)
    return moe, x



@pytest.mark.parametrize("case", sorted(ROUTERS))
def test_gradients_match_finite_differences_of_reference(case):
    moe, x = _moe(case)
    w = random_tokens(x.shape, seed=42)
    loss, grads = loss_and_gradients(moe, x, lambda y: ops.sum(y * ops.convert_to_tensor(w)))

    kernel = to_numpy(moe.router.kernel).astype("float64")
    weights = expert_weights(moe.experts)

    def ref_loss(router_kernel=kernel, expert_w=weights):
        return float(np.sum(reference_forward(moe, x, router_kernel, expert_w) * w))

    np.testing.assert_allclose(loss, ref_loss(), rtol=1e-4, atol=1e-4)
    eps = 1e-4
    # Router kernel: every entry.
    fd = np.zeros_like(kernel)
    for idx in np.ndindex(*kernel.shape):
        plus, minus = kernel.copy(), kernel.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd[idx] = (ref_loss(router_kernel=plus) - ref_loss(router_kernel=minus)) / (2 * eps)
    got = grads[moe.router.kernel.path]
    assert np.abs(fd).max() > 1e-2, "router gradient must not vanish"
    np.testing.assert_allclose(got, fd, rtol=1e-2, atol=2e-3)
    # Expert weights: a few entries of each.
    rng = np.random.default_rng(0)
    for name, value in weights.items():
        variable = getattr(moe.experts, name)
        got = grads[variable.path]
        assert np.abs(got).max() > 1e-3, name
        for _ in range(4):
            idx = tuple(int(rng.integers(n)) for n in value.shape)
            plus = {k: v.copy() for k, v in weights.items()}
            minus = {k: v.copy() for k, v in weights.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            expected = (ref_loss(expert_w=plus) - ref_loss(expert_w=minus)) / (2 * eps)
            np.testing.assert_allclose(got[idx], expected, rtol=1e-2, atol=2e-3,
                                       err_msg=f"{name}{idx}")


def test_experts_without_tokens_get_no_gradient():
    moe, x = _moe("token_choice", top_k=1, capacity_factor=2.0)
    x[..., 0] = 5.0
    kernel = to_numpy(moe.router.kernel)
    kernel[0, :3] = 2.0
    kernel[0, 3] = -2.0  # expert 3 is never chosen
    moe.router.kernel.assign(kernel)
    index = moe.routing_stats(x)["expert_index"]
    assert 3 not in index
    used = np.unique(index)
    _, grads = loss_and_gradients(moe, x, lambda y: ops.sum(ops.square(y)))
    for name in ("kernel_in", "bias_in", "kernel_out", "bias_out"):
        g = grads[getattr(moe.experts, name).path]
        np.testing.assert_array_equal(g[3], 0.0, err_msg=name)
        for e in used:
            assert np.abs(g[e]).max() > 0, (name, e)


@pytest.mark.parametrize("case", sorted(ROUTERS))
def test_one_fit_step_updates_router_and_experts(case):
    kwargs = dict(num_experts=4, intermediate_dim=8)
    kwargs.update(ROUTERS[case])
    inputs = keras.Input((8, 6))
    moe = SparseMoE(**kwargs)
    model = keras.Model(inputs, moe(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {v.path: to_numpy(v) for v in model.trainable_variables}
    x = random_tokens((2, 8, 6))
    model.fit(x, random_tokens((2, 8, 6), seed=1), epochs=1, batch_size=2, verbose=0)
    changed = {p for p, v in before.items()
               if np.any(to_numpy(_by_path(model, p)) != v)}
    expected = {moe.router.kernel.path} | {
        getattr(moe.experts, n).path for n in ("kernel_in", "kernel_out", "bias_in", "bias_out")
    }
    assert expected <= changed


def _by_path(model, path):
    return next(v for v in model.trainable_variables if v.path == path)
