"""Per-group (all-to-all) dispatch under expert parallelism.

The per-group functions are checked against the flat ones on every backend;
the multi-device checks run under KERAS_BACKEND=jax only, in a subprocess
with 8 simulated CPU devices (tests/distribution/a2a_worker.py).
"""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers.dispatch import dense_combine
from keras_sparse_moe.layers.dispatch import dense_dispatch
from keras_sparse_moe.layers.dispatch import gather_combine
from keras_sparse_moe.layers.dispatch import gather_dispatch
from keras_sparse_moe.layers.expert_choice_router import ExpertChoiceRouter
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_dispatch
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_dispatch
from keras_sparse_moe.layers.routing_ops import to_dense
from keras_sparse_moe.layers.soft_router import SoftRouter
from keras_sparse_moe.layers.token_choice_router import TokenChoiceRouter
from tests.distribution.eight_devices import run_eight_device_worker

IS_JAX = keras.backend.backend() == "jax"
G, S, D, E = 3, 10, 6, 4


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture
def groups():
    return np.random.default_rng(0).normal(size=(G, S, D)).astype("float32")


# ------------------------------------------------------------- all backends
def test_token_choice_per_group_equals_flat_gathers(groups):
    router = TokenChoiceRouter(num_experts=E, top_k=2, capacity_factor=1.0)
    routing = router(groups)
    capacity = router.capacity(False, S)
    flat_in = numpy(gather_dispatch(groups, routing["slot_token"]))
    grouped_in = numpy(grouped_gather_dispatch(groups, routing["slot_token"]))
    np.testing.assert_array_equal(grouped_in, flat_in)
    outputs = np.random.default_rng(1).normal(size=flat_in.shape).astype("float32")
    args = (routing["expert_index"], routing["expert_position"], routing["gates"], capacity)
    np.testing.assert_allclose(numpy(grouped_gather_combine(outputs, *args)),
                               numpy(gather_combine(outputs, *args)), atol=1e-6)


def test_expert_choice_per_group_equals_flat(groups):
    router = ExpertChoiceRouter(num_experts=E, top_k=2, capacity_factor=1.0)
    routing = router(groups)
    capacity = router.capacity(False, S)
    flat_in = numpy(gather_dispatch(groups, routing["slot_token"]))
    np.testing.assert_array_equal(numpy(grouped_gather_dispatch(groups, routing["slot_token"])),
                                  flat_in)
    _, combine = to_dense(routing, S, E, capacity)
    outputs = np.random.default_rng(1).normal(size=flat_in.shape).astype("float32")
    np.testing.assert_allclose(numpy(grouped_dense_combine(outputs, combine)),
                               numpy(dense_combine(outputs, combine)), atol=1e-6)


def test_soft_per_group_equals_flat(groups):
    routing = SoftRouter(num_experts=E, slots_per_expert=2)(groups)
    flat_in = numpy(dense_dispatch(groups, routing["dispatch_weights"]))
    np.testing.assert_allclose(
        numpy(grouped_dense_dispatch(groups, routing["dispatch_weights"])), flat_in, atol=1e-6)
    outputs = np.random.default_rng(1).normal(size=flat_in.shape).astype("float32")
    np.testing.assert_allclose(
        numpy(grouped_dense_combine(outputs, routing["combine_weights"])),
        numpy(dense_combine(outputs, routing["combine_weights"])), atol=1e-6)


def test_empty_slots_read_zeros():
    x = np.ones((2, 3, 2), "float32")
    slot_token = np.full((2, 2, 1), 3, "int32")  # every slot empty
    np.testing.assert_array_equal(numpy(grouped_gather_dispatch(x, slot_token)),
                                  np.zeros((2, 2, 2), "float32"))


# -------------------------------------------------- JAX, process checks
@pytest.mark.skipif(not IS_JAX, reason="keras.distribution is implemented for JAX only")
def test_process_count_and_arguments_are_checked():
    from keras_sparse_moe.distribution import check_process_count
    from keras_sparse_moe.distribution import initialize_processes

    with pytest.raises(ValueError, match="Expected 2 processes but JAX runs 1"):
        check_process_count(2)
    with pytest.raises(ValueError, match=r"`process_id` must be in \[0, 2\)"):
        initialize_processes("127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="must be 'host:port'"):
        initialize_processes("127.0.0.1", num_processes=2, process_id=0)


# -------------------------------------------- JAX, 8 simulated devices
@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    return run_eight_device_worker("a2a_worker.py", tmp_path_factory, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("router", ["token_choice", "expert_choice", "soft"])
@pytest.mark.parametrize("expert_parallel", [8, 4])
def test_outputs_and_gradients_match_one_device(eight_devices, router, expert_parallel):
    r = eight_devices[f"{router}_ep{expert_parallel}"]
    assert r["output_diff"] < 1e-5
    assert r["loss_diff"] < 1e-5
    assert r["grad_scale"] > 1e-3  # the gradients compared are not all zero
    assert r["grad_diff"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("router", ["token_choice", "expert_choice", "soft"])
def test_tokens_move_by_all_to_all_never_all_gathered(eight_devices, router):
    for expert_parallel in (8, 4):
        r = eight_devices[f"{router}_ep{expert_parallel}"]
        assert "all-to-all" in r["collectives"]
        assert r["gathered_token_tensors"] == []
    if router != "expert_choice":  # expert choice all-gathers router scores (docs)
        assert "all-gather" not in eight_devices[f"{router}_ep8"]["collectives"]


@pytest.mark.slow
def test_group_straddling_devices_is_a_clear_error(eight_devices):
    message = eight_devices["straddle_error"]
    assert message is not None
    assert "4 routing groups" in message and "straddle" in message
    assert "multiple of 16" in message and "group_size" in message
    assert eight_devices["whole_groups_diff"] < 1e-5
