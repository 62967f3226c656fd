"""Routing parity with google-research/vmoe on the recorded fixture.

`tests/fixtures/vmoe/routing.{json,npz}` holds what vmoe's own routers
computed for 170 cases (see tools/README.md). Each test below builds the
matching router with vmoe's options (`capacity_formula="vmoe"`, vmoe's
rounding and multiple, `aux_loss_convention="vmoe"`), loads the recorded
router parameters and checks the capacity, the slot of every (item, expert)
pair, the dense dispatch/combine tensors and the auxiliary losses.
"""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.layers import backend_random

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vmoe")


@pytest.fixture(scope="module")
def routing():
    with open(os.path.join(FIXTURE, "routing.json")) as f:
        spec = json.load(f)
    arrays = np.load(os.path.join(FIXTURE, "routing.npz"))
    return spec, {key: arrays[key] for key in arrays.files}


def cases(spec, prefix):
    return [case for case in spec["cases"] if case["id"].startswith(prefix)]


ARRAY_KEYS = ("id", "inputs", "kernel", "slot", "gates", "normal", "mu", "scale", "dispatch",
              "combine", "metrics")


def checked_here(grid):
    """The cases this backend checks: all of them; under JAX, the fewest
    cases in which every value of every option (and of the recorded
    capacity and dropped count) still appears.

    The routers are the same `keras.ops` code on every backend. JAX compiles
    each op of an eager call anew for every new shape, which makes the whole
    grid cost about a minute there; tests/layers/test_cross_backend.py holds
    the backends equal on fixed weights.
    """
    if keras.backend.backend() != "jax":
        return grid

    def values(case):
        return {(key, json.dumps(value)) for key, value in case.items() if key not in ARRAY_KEYS}

    missing = set().union(*(values(case) for case in grid))
    chosen = []
    while missing:
        best = max(grid, key=lambda case: len(values(case) & missing))
        chosen.append(best)
        missing -= values(best)
    return chosen


def dense_from_slot(slot, gates, capacity):
    """vmoe's (G, S, E, C) dispatch and combine from the stored slot encoding."""
    dispatch = slot[..., None] == np.arange(capacity)
    combine = np.where(dispatch, gates[..., None], 0.0).astype("float32")
    return dispatch.astype("float32"), combine


def token_choice_slot(routing, num_experts, capacity):
    expert_index = ops.convert_to_numpy(routing["expert_index"])
    position = ops.convert_to_numpy(routing["expert_position"])
    groups, size, k = expert_index.shape
    slot = np.full((groups, size, num_experts), -1, "int64")
    g, s, j = np.nonzero(position < capacity)
    slot[g, s, expert_index[g, s, j]] = position[g, s, j]
    return slot


def mean_metric(case, name):
    return float(np.mean(np.asarray(case["metrics"][name], "float64")))


def build(router, arrays, case, kernel):
    inputs = arrays[case["inputs"]]
    router.build((None,) + inputs.shape[1:])
    router.kernel.assign(kernel)
    return inputs


def check_token_choice(case, arrays, training, monkeypatch=None):
    num_experts, k = case["num_experts"], case["num_selected_experts"]
    router = TokenChoiceRouter(
        num_experts, top_k=k, capacity_factor=case["capacity_factor"],
        noise_std=case.get("noise_std", 1.0), batch_priority=case["batch_priority"],
        capacity_rounding=case["capacity_ceil_or_round"],
        capacity_multiple_of=case["capacity_multiple_of"], capacity_formula="vmoe",
        aux_loss_convention="vmoe", importance_loss_weight=1.0, load_loss_weight=1.0,
        load_balancing_loss_weight=0.0,
    )
    inputs = build(router, arrays, case, arrays[case["kernel"]])
    if training:
        normal = arrays[case["normal"]]
        monkeypatch.setattr(
            backend_random, "normal", lambda shape, seed=None: ops.convert_to_tensor(normal)
        )
    capacity = router.capacity(training, case["group_size"])
    assert capacity == case["capacity"], case["id"]
    out = router(inputs, training=training)
    slot = token_choice_slot(out, num_experts, capacity)
    np.testing.assert_array_equal(slot, arrays[case["slot"]], err_msg=case["id"])
    dispatch, combine = dense_from_slot(arrays[case["slot"]], arrays[case["gates"]], capacity)
    np.testing.assert_array_equal(ops.convert_to_numpy(out["dispatch_mask"]), dispatch)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["combine_weights"]), combine, rtol=0, atol=1e-6,
        err_msg=case["id"],
    )
    losses = {name: float(ops.convert_to_numpy(v)) for name, v in out["aux_losses"].items()}
    expected = {"importance_loss": "importance_loss", "load_balancing_loss": "gshard_loss"}
    if training:
        expected["load_loss"] = "load_loss"
    else:
        assert "load_loss" not in losses
    for ours, theirs in expected.items():
        np.testing.assert_allclose(
            losses[ours], mean_metric(case, theirs), rtol=1e-6, atol=1e-6, err_msg=case["id"]
        )
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(out["aux_loss"])), mean_metric(case, "auxiliary_loss"),
        rtol=1e-6, atol=1e-6, err_msg=case["id"],
    )


def test_token_choice_matches_vmoe(routing):
    spec, arrays = routing
    grid = cases(spec, "tc-")
    assert len(grid) == 96
    assert {case["batch_priority"] for case in checked_here(grid)} == {False, True}
    for case in checked_here(grid):
        check_token_choice(case, arrays, training=False)


def test_noisy_token_choice_matches_vmoe(routing, monkeypatch):
    spec, arrays = routing
    grid = cases(spec, "tcnoisy-")
    assert len(grid) == 8
    for case in grid:
        check_token_choice(case, arrays, training=True, monkeypatch=monkeypatch)


def test_expert_choice_matches_vmoe(routing):
    spec, arrays = routing
    grid = cases(spec, "ec-")
    assert len(grid) == 48
    for case in checked_here(grid):
        num_experts = case["num_experts"]
        router = ExpertChoiceRouter(
            num_experts, capacity_factor=case["capacity_factor"],
            capacity_rounding=case["capacity_ceil_or_round"],
            capacity_multiple_of=case["capacity_multiple_of"], capacity_formula="vmoe",
        )
        inputs = build(router, arrays, case, arrays[case["kernel"]])
        capacity = router.capacity(False, case["group_size"])
        assert capacity == case["capacity"], case["id"]
        out = router(inputs, training=False)
        slot_token = ops.convert_to_numpy(out["slot_token"])  # (G, E, C)
        groups = slot_token.shape[0]
        slot = np.full((groups, case["group_size"], num_experts), -1, "int64")
        g, e, c = np.meshgrid(
            np.arange(groups), np.arange(num_experts), np.arange(capacity), indexing="ij"
        )
        slot[g, slot_token, e] = c
        np.testing.assert_array_equal(slot, arrays[case["slot"]], err_msg=case["id"])
        dispatch, combine = dense_from_slot(
            arrays[case["slot"]], arrays[case["gates"]], capacity
        )
        np.testing.assert_array_equal(ops.convert_to_numpy(out["dispatch_mask"]), dispatch)
        np.testing.assert_allclose(
            ops.convert_to_numpy(out["combine_weights"]), combine, rtol=0, atol=1e-6,
            err_msg=case["id"],
        )
        assert float(ops.convert_to_numpy(out["aux_loss"])) == case["metrics"]["auxiliary_loss"]


def test_soft_moe_matches_vmoe(routing):
    spec, arrays = routing
    grid = cases(spec, "soft-")
    assert len(grid) == 18
    checked = 0
    for case in checked_here(grid):
        num_experts, slots = case["num_experts"], case["num_slots"]
        if case["num_slots_arg"] is None:
            router = SoftRouter(
                num_experts, slots_per_expert=None, capacity_factor=case["capacity_factor"]
            )
        else:
            router = SoftRouter(num_experts, slots_per_expert=case["num_slots_arg"])
        mu = arrays[case["mu"]]
        inputs = build(router, arrays, case, mu.reshape(mu.shape[0], -1))
        router.scale.assign(arrays[case["scale"]])
        assert router.capacity(False, case["group_size"]) == slots, case["id"]
        out = router(inputs, training=False)
        assert float(ops.convert_to_numpy(out["aux_loss"])) == case["metrics"]["auxiliary_loss"]
        dispatch = ops.convert_to_numpy(out["dispatch_weights"])
        combine = ops.convert_to_numpy(out["combine_weights"])
        for name, ours in (("dispatch", dispatch), ("combine", combine)):
            np.testing.assert_allclose(
                ours.min(axis=(2, 3)).mean() if name == "combine" else ours.min(axis=1).mean(),
                case["metrics"][f"{name}_weights_min_mean"], rtol=1e-5, err_msg=case["id"],
            )
            if case[name] is not None:
                np.testing.assert_allclose(
                    ours, arrays[case[name]], rtol=0, atol=1e-6, err_msg=case["id"]
                )
                checked += 1
    assert checked == 2 * len([c for c in checked_here(grid) if c["dispatch"] is not None])
    assert checked >= (2 * 10 if len(checked_here(grid)) == len(grid) else 2)


def test_soft_moe_noise_is_vmoes(routing, monkeypatch):
    """vmoe's `SoftRouter(noise_std=)`: in training, `noise_std * normal` is
    added to the logits (G, S, E, n) before both softmaxes; at inference
    there is none (then the recorded deterministic weights hold)."""
    spec, arrays = routing
    case = next(case for case in cases(spec, "soft-") if case["dispatch"] is not None)
    num_experts, slots = case["num_experts"], case["num_slots"]
    router = SoftRouter(num_experts, slots_per_expert=slots, noise_std=0.5, seed=1)
    mu = arrays[case["mu"]]
    inputs = build(router, arrays, case, mu.reshape(mu.shape[0], -1))
    router.scale.assign(arrays[case["scale"]])
    out = router(inputs, training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(out["dispatch_weights"]),
                               arrays[case["dispatch"]], rtol=0, atol=1e-6)
    groups, size = inputs.shape[:2]
    normal = np.random.RandomState(0).randn(groups, size, num_experts * slots).astype("float32")
    monkeypatch.setattr(
        backend_random, "normal", lambda shape, seed=None: ops.convert_to_tensor(normal))
    out = router(inputs, training=True)
    # vmoe/projects/soft_moe/router.py, in NumPy (float64).
    x = inputs.astype("float64")
    x = x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-6)
    mu = mu.astype("float64")
    mu = mu / np.sqrt(np.sum(mu * mu, axis=0, keepdims=True) + 1e-6)
    mu = mu * float(arrays[case["scale"]])
    logits = np.einsum("gmd,dnp->gmnp", x, mu) + 0.5 * normal.reshape(groups, size,
                                                                       num_experts, slots)
    dispatch = np.exp(logits - logits.max(axis=1, keepdims=True))
    dispatch /= dispatch.sum(axis=1, keepdims=True)
    combine = np.exp(logits - logits.max(axis=(2, 3), keepdims=True))
    combine /= combine.sum(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(out["dispatch_weights"]), dispatch,
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out["combine_weights"]), combine,
                               rtol=0, atol=1e-6)
    assert np.abs(dispatch - arrays[case["dispatch"]]).max() > 1e-3  # the noise counts
    config = router.get_config()
    assert (config["noise_std"], config["seed"]) == (0.5, 1)
    assert SoftRouter.from_config(config).noise_std == 0.5
    assert not hasattr(SoftRouter(num_experts, slots_per_expert=slots), "seed_generator")
    with pytest.raises(ValueError, match="noise_std.*-1"):
        SoftRouter(num_experts, noise_std=-1.0)
