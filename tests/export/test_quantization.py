"""LiteRT quantization modes: builtin ops only, file sizes, closeness to
Keras, and full int8 with the routers kept in float32.

On PyTorch the quantized exports (with the representative data for int8) go
through the TensorFlow subprocess, as on JAX (tests/export/backends.py)."""

import os

import keras
import numpy as np
import pytest

import keras_sparse_moe as ksm
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export import list_litert_ops
from keras_sparse_moe.export.litert import non_builtin_ops
from tests.export.backends import not_repeated_on_jax

pytestmark = not_repeated_on_jax

NUM_EXPERTS, DIM = 8, 64


@pytest.fixture(scope="module")
def moe():
    """One SparseMoE layer whose expert weights dominate the file, random
    inputs, and its Keras outputs."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, DIM))
    model = keras.Model(inputs, ksm.SparseMoE(NUM_EXPERTS, 1024)(inputs))
    data = np.random.default_rng(1).random((16, 16, DIM), dtype=np.float32)
    return model, data, keras.ops.convert_to_numpy(model.predict(data, verbose=0))


def _export(model, path, mode, data, calibrate=False, **kwargs):
    path = ksm.export_litert(model, path, quantization=mode,
                             representative_data=data if calibrate else None, **kwargs)
    assert non_builtin_ops(list_litert_ops(path)) == []
    return path, LiteRTModel(path)(data)


def _relative_error(got, want):
    return float(np.mean(np.abs(got - want)) / np.mean(np.abs(want)))


def _router_weight_dtype(path):
    """dtype of the router's weight (the FULLY_CONNECTED with an
    `(experts, dim)` kernel) in a LiteRT file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    dtypes = {
        tensors[op["inputs"][1]]["dtype"].__name__
        for op in interpreter._get_ops_details()
        if op["op_name"] == "FULLY_CONNECTED"
        and tuple(tensors[op["inputs"][1]]["shape"]) == (NUM_EXPERTS, DIM)
    }
    assert len(dtypes) == 1, dtypes
    return dtypes.pop()


def test_quantized_files_are_smaller_and_close(tmp_path, moe):
    model, data, want = moe
    # On JAX/PyTorch: float32 (the reference size) and dynamic_int8 through
    # the child; float16 differs only by the mode string passed to it.
    modes = [None, "float16", "dynamic_int8"]
    if keras.backend.backend() != "tensorflow":
        modes.remove("float16")
    sizes = {}
    for mode in modes:
        path, got = _export(model, tmp_path / f"{mode}.tflite", mode, data)
        sizes[mode] = os.path.getsize(path)
        assert np.max(np.abs(got - want)) <= 0.05 * np.max(np.abs(want)), mode
    assert sizes[None] / sizes["dynamic_int8"] >= 3.5
    if "float16" in sizes:
        assert sizes[None] / sizes["float16"] >= 1.8


def test_int8_keeps_routers_float(tmp_path, moe):
    """Full int8 of a token-choice MoE: with float routers the output stays
    close to Keras; quantizing the routers (the known failure of int8 top-k
    routing) makes it unusable on this untrained model."""
    model, data, want = moe
    path, got = _export(model, tmp_path / "int8.tflite", "int8", data, calibrate=True)
    assert _router_weight_dtype(path) == "float32"
    assert "QUANTIZE" in list_litert_ops(path)
    assert os.path.getsize(path) < 0.3 * 4 * model.count_params()
    error = _relative_error(got, want)
    assert error <= 0.15, error
    if keras.backend.backend() != "tensorflow":
        return  # the option reaches the child like the rest; compared on TensorFlow
    path, got = _export(model, tmp_path / "int8_q.tflite", "int8", data, calibrate=True,
                        quantize_routers=True)
    assert _router_weight_dtype(path) == "int8"
    assert _relative_error(got, want) > 3 * error
