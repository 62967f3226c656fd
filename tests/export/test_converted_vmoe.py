"""A V-MoE converted from a vmoe checkpoint exports to LiteRT with builtin
ops only, and the LiteRT model computes vmoe's logits: the fixture
`tests/fixtures/vmoe/models/vmoe_map` (MAP head, two MoE blocks, top-1 at a
capacity that drops tokens), converted and exported on TensorFlow and
PyTorch (which exports through the TensorFlow subprocess, as JAX does:
tests/export/backends.py; the conversion itself is checked on every backend
in tests/convert)."""

import json
import os

import keras
import numpy as np

from keras_sparse_moe import export_litert
from keras_sparse_moe.convert import convert_vmoe
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export import list_litert_ops
from keras_sparse_moe.export.litert import non_builtin_ops
from tests.export.backends import not_repeated_on_jax

pytestmark = not_repeated_on_jax

MODEL = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vmoe", "models", "vmoe_map")
VARIANT = "tc_k1_cf1"


def test_converted_vmoe_exports_with_builtin_ops_and_keeps_parity(tmp_path):
    with open(os.path.join(MODEL, "variants.json")) as f:
        config = json.load(f)[VARIANT]
    model = convert_vmoe(os.path.join(MODEL, "params"), tmp_path / "preset", config=config)
    path = export_litert(model, tmp_path / "vmoe_map.tflite")
    ops = list_litert_ops(path)
    assert non_builtin_ops(ops) == [], ops
    assert "TOPK_V2" in ops  # the router's top-k runs in the file
    io = np.load(os.path.join(MODEL, "io.npz"))
    got = LiteRTModel(path)(io["images"])
    want = keras.ops.convert_to_numpy(model.predict(io["images"], verbose=0))
    assert got.shape == want.shape == io[f"{VARIANT}/logits"].shape
    assert np.max(np.abs(got - want)) <= 1e-4
    assert np.max(np.abs(got - io[f"{VARIANT}/logits"])) <= 1e-4  # vmoe's own logits
