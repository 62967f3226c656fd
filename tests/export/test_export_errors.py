"""Models that cannot be exported to builtin-only LiteRT fail with a message
naming the layer and the reason, and leave no file: in-process on
TensorFlow and through the TensorFlow subprocess on PyTorch (which JAX
shares: tests/export/backends.py).

The layers are module-level and registered so that the TensorFlow-backend
child used on JAX/PyTorch can import this module and rebuild them."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_sparse_moe as ksm
from tests.export.backends import not_repeated_on_jax

pytestmark = not_repeated_on_jax


@keras.saving.register_keras_serializable(package="ksm_export_tests")
class ErfLayer(keras.layers.Layer):
    """Portable keras.ops without LiteRT builtin kernels."""

    def call(self, x):
        return ops.erf(x) + ops.erfinv(0.5 * ops.tanh(x))


@keras.saving.register_keras_serializable(package="ksm_export_tests")
class InferenceNotWritten(keras.layers.Layer):
    def call(self, x, training=None):
        if training is False:
            raise NotImplementedError("inference path not written")
        return x


@keras.saving.register_keras_serializable(package="ksm_export_tests")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def _model(layer):
    inputs = keras.Input((4,))
    return keras.Model(inputs, layer(keras.layers.Dense(4, name="proj")(inputs)))


def test_ops_without_builtin_kernels_are_named_with_their_layer(tmp_path):
    with pytest.raises(ValueError, match="builtin ops only") as info:
        ksm.export_litert(_model(ErfLayer(name="erf_layer")), tmp_path / "m.tflite")
    message = str(info.value)
    assert "op Erf needs a Flex" in message
    assert "op Erfinv has no LiteRT kernel" in message
    assert "in layer 'erf_layer' (ErfLayer)" in message
    assert os.listdir(tmp_path) == []


def test_layer_failing_at_trace_time_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"failed in layer\(s\) \['late'\]") as info:
        ksm.export_litert(_model(InferenceNotWritten(name="late")), tmp_path / "m.tflite")
    assert "NotImplementedError: inference path not written" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_custom_layer_from_an_importable_module_exports(tmp_path):
    model = _model(Twice(name="twice"))
    path = ksm.export_litert(model, tmp_path / "m.tflite")
    x = np.ones((2, 4), "float32")
    got = ksm.export.LiteRTModel(path)(x)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize("case", ["lambda", "local_class"])
def test_layers_the_tensorflow_child_cannot_rebuild(tmp_path, case):
    if case == "lambda":
        layer = keras.layers.Lambda(lambda t: t * 3.0, name="times3")
        reason = "wraps a Python lambda"
    else:
        class Local(keras.layers.Layer):
            def call(self, x):
                return x

        layer = Local(name="times3")
        reason = "defined inside a function"
    model = _model(layer)
    if keras.backend.backend() == "tensorflow":
        # Converted in-process: nothing to rebuild.
        assert os.path.isfile(ksm.export_litert(model, tmp_path / "m.tflite"))
        return
    with pytest.raises(ValueError, match=reason) as info:
        ksm.export_litert(model, tmp_path / "m.tflite")
    assert "Layer 'times3'" in str(info.value)
    assert "register_keras_serializable" in str(info.value)
    assert os.listdir(tmp_path) == []
