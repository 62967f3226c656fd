"""A paper-sized preset converts to LiteRT at its real image size
(conversion only: V-MoE-S/32, 56M parameters, 224x224 images).

It runs once, under PyTorch: there the export takes the path of every
backend but TensorFlow (the model saved to a `.keras` file and converted in a
TensorFlow subprocess), which includes TensorFlow's own conversion; the
smaller exports of tests/export run on every backend."""

import os

import keras
import numpy as np
import pytest

from keras_sparse_moe import export_litert
from keras_sparse_moe import from_preset
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export import list_litert_ops
from keras_sparse_moe.export.litert import non_builtin_ops
from keras_sparse_moe.presets import get_preset


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="one backend: the PyTorch run covers the subprocess export and "
                           "TensorFlow's conversion at this size")
def test_vmoe_s32_converts_with_builtin_ops_only(tmp_path):
    # The preset routes groups of 8 images (vmoe's); one image per group
    # exports a model that takes one image at a time.
    moe_kwargs = {**get_preset("vmoe_s32_e8_k2_last2").backbone_config["moe_kwargs"],
                  "group_size": None}
    model = from_preset("vmoe_s32_e8_k2_last2", load_weights=False, moe_kwargs=moe_kwargs)
    path = export_litert(model, tmp_path / "vmoe_s32.tflite", quantization="dynamic_int8")
    ops = list_litert_ops(path)
    assert non_builtin_ops(ops) == [], ops
    # 56.2M parameters as int8 weights (plus float norms/biases/routers):
    # about a quarter of the 225 MB of float32 weights.
    assert 50e6 < os.path.getsize(path) < 0.3 * 4 * 56.2e6
    images = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    out = LiteRTModel(path)(images)
    assert out.shape == (1, 50, 512) and np.all(np.isfinite(out))
