"""Building a model whose weights are loaded next (`build_then_load`)."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.utils.deferred_init import build_then_load


class CountingInitializer(keras.initializers.Initializer):
    calls = 0

    def __call__(self, shape, dtype=None):
        CountingInitializer.calls += 1
        return keras.ops.full(shape, 0.5, dtype=dtype)


def _build():
    layer = keras.layers.Dense(3, kernel_initializer=CountingInitializer(),
                               bias_initializer=CountingInitializer())
    layer.build((None, 2))
    return layer


def _later_stateless_scope_is_fine():
    # Keras initializes pending variables when a StatelessScope exits: a
    # variable left on its list after loading would fail there.
    with keras.StatelessScope():
        pass


def test_loaded_variables_skip_their_initializers_and_the_rest_get_them():
    CountingInitializer.calls = 0
    kernel = np.arange(6, dtype="float32").reshape(2, 3)
    layer = build_then_load(_build, lambda layer: layer.kernel.assign(kernel))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), [0.5] * 3)
    # On JAX the loaded kernel's initializer never runs (it would be a
    # compiled program); elsewhere both run, as in a plain build.
    assert CountingInitializer.calls == (1 if keras.backend.backend() == "jax" else 2)
    _later_stateless_scope_is_fine()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(np.ones((1, 2), "float32"))), [[3.5, 5.5, 7.5]])


def test_a_failed_load_raises_and_leaves_keras_clean():
    def load(layer):
        layer.kernel.assign(np.ones((2, 3), "float32"))
        raise OSError("truncated file")

    with pytest.raises(OSError, match="truncated"):
        build_then_load(_build, load)
    _later_stateless_scope_is_fine()
    with pytest.raises(ValueError, match="fails"):
        build_then_load(_build, lambda layer: (_ for _ in ()).throw(ValueError("fails")))
    _later_stateless_scope_is_fine()


def test_under_a_distribution_variables_are_built_as_usual():
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution is JAX's")
    CountingInitializer.calls = 0
    with keras.distribution.DataParallel().scope():
        layer = build_then_load(_build, lambda layer: layer.kernel.assign(np.ones((2, 3))))
    assert CountingInitializer.calls == 2  # the layouts are set at initialization
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), np.ones((2, 3)))
