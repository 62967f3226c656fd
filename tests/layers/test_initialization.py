"""Expert weights start like independent dense layers: distinct experts,
distinct weights, the scale of a dense kernel of the same fan-in/fan-out,
reproducible with a seeded initializer."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import Experts


def _kernels(layer):
    return {name: keras.ops.convert_to_numpy(getattr(layer, name))
            for name in ("kernel_in", "kernel_gate", "kernel_out") if hasattr(layer, name)}


@pytest.mark.parametrize("initializer", ["glorot_uniform", "he_normal"])
def test_experts_and_weights_are_distinct(initializer):
    layer = Experts(6, 32, gated=True, kernel_initializer=initializer)
    layer.build((None, 5, 16))
    kernels = _kernels(layer)
    rows = [k[e].tobytes() for k in kernels.values() for e in range(6)]
    assert len(set(rows)) == len(rows)  # no expert or weight repeats another


def test_each_expert_has_the_scale_of_a_dense_kernel():
    layer = Experts(16, 256, kernel_initializer="glorot_uniform")
    layer.build((None, 4, 64))
    limit = np.sqrt(6.0 / (64 + 256))  # Glorot for a (64, 256) dense kernel
    kernel = _kernels(layer)["kernel_in"]
    assert np.abs(kernel).max() <= limit + 1e-6
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.1 * limit / np.sqrt(3)


def test_seeded_initializer_is_reproducible():
    def build():
        layer = Experts(3, 8, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
        layer.build((None, 2, 4))
        return _kernels(layer)

    first, second = build(), build()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["kernel_in"][0], first["kernel_in"][1])
