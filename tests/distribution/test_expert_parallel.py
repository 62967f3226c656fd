"""Expert and data parallelism through `keras.distribution`.

The multi-device checks run under KERAS_BACKEND=jax only, in a subprocess
with 8 simulated CPU devices (tests/distribution/ep_worker.py), because the
device count must be fixed before JAX starts.
"""

import keras
import numpy as np
import pytest

from keras_sparse_moe.distribution import ExpertParallel
from keras_sparse_moe.distribution import constrain_expert_tensor
from keras_sparse_moe.distribution import data_parallel_distribution
from keras_sparse_moe.distribution import expert_device_mesh
from keras_sparse_moe.distribution import expert_layout_map
from keras_sparse_moe.distribution import expert_parallel_distribution
from keras_sparse_moe.distribution import is_expert_variable_path
from tests.distribution.eight_devices import run_eight_device_worker

IS_JAX = keras.backend.backend() == "jax"
jax_only = pytest.mark.skipif(
    not IS_JAX, reason="keras.distribution (DeviceMesh sharding) is implemented for JAX only"
)
FAKE_DEVICES = [f"cpu:{i}" for i in range(8)]  # names only: never placed on


def fake_mesh(data, expert):
    return keras.distribution.DeviceMesh(
        (data, expert), ("data", "expert"), devices=FAKE_DEVICES[: data * expert]
    )


# ------------------------------------------------------------- all backends
def test_expert_weight_paths_are_recognised_at_any_depth():
    for path in ("moe/experts/kernel_in", "block_3/mlp/experts/kernel_gate",
                 "experts_2/bias_out", "a/b/experts/kernel_out", "moe/experts/bias_in"):
        assert is_expert_variable_path(path), path
    for path in ("moe/router/kernel", "moe/experts_head/kernel", "dense/kernel",
                 "moe/experts/kernel_in_extra", "moe/expert_fraction"):
        assert not is_expert_variable_path(path), path


def test_layout_map_splits_only_expert_weights():
    layout_map = expert_layout_map(fake_mesh(2, 4))
    assert layout_map["vit/block_0/moe/experts/kernel_in"].axes == ("expert", None, None)
    assert layout_map["moe/experts/kernel_out"].axes == ("expert", None, None)
    assert layout_map["moe/experts/bias_in"].axes == ("expert", None)
    assert layout_map["moe/router/kernel"] is None
    assert layout_map["head/kernel"] is None


def test_layout_map_rejects_mesh_without_expert_axis():
    mesh = keras.distribution.DeviceMesh((8,), ("batch",), devices=FAKE_DEVICES)
    with pytest.raises(ValueError, match="'expert' axis"):
        expert_layout_map(mesh)


def test_constraint_is_identity_without_expert_parallelism():
    x = np.random.rand(4, 6, 8).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(constrain_expert_tensor(x)), x)
    symbolic = keras.KerasTensor((4, 6, 8))
    assert constrain_expert_tensor(symbolic) is symbolic


@pytest.mark.skipif(IS_JAX, reason="checks the message given on TensorFlow/PyTorch")
def test_other_backends_get_a_clear_error():
    with pytest.raises(RuntimeError, match="JAX backend only"):
        expert_parallel_distribution(num_experts=8)
    with pytest.raises(RuntimeError, match="JAX backend only"):
        data_parallel_distribution()


# ---------------------------------------------------- JAX, in this process
@jax_only
def test_mesh_defaults_to_largest_expert_group_dividing_every_layer():
    mesh = expert_device_mesh(FAKE_DEVICES, num_experts=[4, 8])
    assert tuple(mesh.axis_names) == ("data", "expert")
    assert tuple(mesh.shape) == (2, 4)
    assert tuple(expert_device_mesh(FAKE_DEVICES, data_parallel=4).shape) == (4, 2)


@jax_only
def test_mesh_not_dividing_the_experts_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"does not divide num_experts=6.*allowed.*\[1, 2\]"):
        expert_parallel_distribution(devices=FAKE_DEVICES, expert_parallel=4, num_experts=6)
    with pytest.raises(ValueError, match="must divide the number of devices"):
        expert_device_mesh(FAKE_DEVICES, expert_parallel=3)
    with pytest.raises(ValueError, match="must equal the number of devices"):
        expert_device_mesh(FAKE_DEVICES, expert_parallel=2, data_parallel=2)
    with pytest.raises(ValueError, match="`expert_parallel` must be >= 1"):
        expert_device_mesh(FAKE_DEVICES, expert_parallel=0)
    with pytest.raises(ValueError, match="`devices` must be a list"):
        expert_device_mesh(8)


@jax_only
def test_batch_is_split_over_both_axes_when_it_divides():
    distribution = ExpertParallel(expert_layout_map(fake_mesh(2, 4)))
    assert distribution.num_model_replicas == 8
    assert distribution.get_data_layout((16, 8, 8)).axes == (("data", "expert"), None, None)
    assert distribution.get_data_layout((6, 8)).axes == ("data", None)
    assert distribution.get_data_layout((3,)).axes == (None,)
    data_only = ExpertParallel(expert_layout_map(fake_mesh(2, 4)), shard_batch_over_experts=False)
    assert data_only.num_model_replicas == 2
    assert data_only.get_data_layout((16, 8)).axes == ("data", None)


@jax_only
def test_constraint_rejects_expert_count_not_divisible_by_mesh():
    with ExpertParallel(expert_layout_map(fake_mesh(2, 4))).scope():
        with pytest.raises(ValueError, match="Cannot shard 6 experts over the 4 devices"):
            constrain_expert_tensor(np.zeros((6, 4, 2), "float32"))


@jax_only
def test_data_parallel_helper_returns_keras_data_parallel():
    distribution = data_parallel_distribution()
    assert isinstance(distribution, keras.distribution.DataParallel)
    assert distribution.device_mesh.shape[0] == len(keras.distribution.list_devices())


# -------------------------------------------- JAX, 8 simulated devices
@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    return run_eight_device_worker("ep_worker.py", tmp_path_factory, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("expert_parallel", [8, 4])
def test_each_device_holds_its_share_of_every_expert_weight(eight_devices, expert_parallel):
    placement = eight_devices[f"placement_ep{expert_parallel}"]
    assert placement["mesh"] == {"data": 8 // expert_parallel, "expert": expert_parallel}
    expert_weights = {p: r for p, r in placement["weights"].items() if r["expert"]}
    assert len(expert_weights) == 4  # kernel_in, kernel_out, bias_in, bias_out
    for path, report in placement["weights"].items():
        assert report["devices"] == 8, path
        if report["expert"]:
            assert report["fractions"] == [1 / expert_parallel] * 8, path
            # The expert groups hold disjoint slices covering all 8 experts.
            assert len(report["ranges"]) == expert_parallel, path
            assert report["ranges"][0][0] == 0 and report["ranges"][-1][1] == 8, path
        else:
            assert report["fractions"] == [1.0] * 8, path
    for path, report in placement["optimizer"].items():  # Adam slots follow
        assert report["fractions"] == [1 / expert_parallel] * 8, path


@pytest.mark.slow
def test_outputs_loss_and_update_match_single_device(eight_devices):
    step = eight_devices["step"]
    assert step["output_diff"] < 1e-5
    assert step["eager_output_diff"] < 1e-5
    assert abs(step["loss_sharded"] - step["loss_single"]) < 1e-5
    assert step["weight_diff"] < 1e-5
    assert step["output_after_diff"] < 1e-5


@pytest.mark.slow
def test_data_parallel_replicates_weights_and_matches_single_device(eight_devices):
    data_parallel = eight_devices["data_parallel"]
    for path, report in data_parallel["weights"].items():
        assert report["fractions"] == [1.0] * 8, path
    assert data_parallel["loss_diff"] < 1e-5


@pytest.mark.slow
def test_short_fit_converges_like_single_device(eight_devices):
    single, sharded = eight_devices["fit"]["single"], eight_devices["fit"]["sharded"]
    np.testing.assert_allclose(sharded["loss"], single["loss"], rtol=1e-4)
    assert sharded["loss"][-1] < 0.85 * sharded["loss"][0]
    assert sharded["accuracy"][-1] > 0.2  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_model_not_dividing_the_mesh_is_a_clear_value_error(eight_devices):
    errors = eight_devices["errors"]
    assert errors["build"] is not None and "moe/experts/kernel_in" in errors["build"]
    assert "6 experts" in errors["build"] and "4 devices" in errors["build"]
    assert errors["factory"] is not None and "num_experts=6" in errors["factory"]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["sharded_h5_to_single", "sharded_keras_to_single",
                                 "single_h5_to_sharded", "single_keras_to_sharded"])
def test_checkpoints_load_across_layouts(eight_devices, key):
    checkpoint = eight_devices["checkpoint"]
    assert checkpoint[key] < 1e-5
    assert checkpoint["single_devices"] == [1]
    if key.endswith("to_sharded"):
        assert checkpoint[key + "_spec"] == "P('expert', None, None)"


@pytest.mark.slow
def test_dispatched_tokens_move_by_all_to_all(eight_devices):
    assert eight_devices["collectives"]["soft"].get("all-to-all", 0) > 0
