"""LiteRT export: builtin ops only, numerics equal to Keras, bad arguments,
atomic output, the interpreter wrapper.

On JAX and PyTorch every export goes through the TensorFlow subprocess, so
these tests also check the cross-backend design. Quantization:
test_quantization.py; layers that cannot be converted: test_export_errors.py."""

import os

import keras
import numpy as np
import pytest

import keras_sparse_moe as ksm
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export import list_litert_ops
from keras_sparse_moe.export.litert import non_builtin_ops
from keras_sparse_moe.layers import MoETransformerEncoderBlock


def _model(router="token_choice", dim=32, experts=4, hidden=64):
    inputs = keras.Input((16, dim))
    x = MoETransformerEncoderBlock(
        num_heads=2, mlp_dim=hidden, moe={"num_experts": experts, "top_k": 2, "router": router}
    )(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).random((6, 16, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def token_choice_export(tmp_path_factory):
    """One float32 export of a token-choice MoE block, shared by the tests
    (one TensorFlow subprocess on JAX/PyTorch)."""
    keras.utils.set_random_seed(7)
    model = _model("token_choice")
    return model, ksm.export_litert(model, tmp_path_factory.mktemp("tc") / "m.tflite")


def _check_builtin_and_equal(model, path, data, router):
    ops = list_litert_ops(path)
    assert non_builtin_ops(ops) == [], ops
    assert "TOPK_V2" in ops or router == "soft"  # argsort of Batch Priority Routing
    got = LiteRTModel(path)(data)
    want = keras.ops.convert_to_numpy(model.predict(data, verbose=0))
    assert np.max(np.abs(got - want)) <= 1e-4
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


def test_float32_token_choice_matches_keras_with_builtin_ops_only(token_choice_export, data):
    model, path = token_choice_export
    _check_builtin_and_equal(model, path, data, "token_choice")


@pytest.mark.parametrize("router", ["expert_choice", "soft"])
def test_float32_other_routers_match_keras(tmp_path, data, router):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("same subprocess path as token choice; one subprocess suffices")
    model = _model(router)
    _check_builtin_and_equal(model, ksm.export_litert(model, tmp_path / "m.tflite"), data, router)


def test_bad_arguments(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match=r"\[None, 'float16', 'dynamic_int8', 'int8'\]"):
        ksm.export_litert(model, tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        ksm.export_litert(model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ValueError, match="does not exist"):
        ksm.export_litert(model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match="is a directory"):
        ksm.export_litert(model, tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        ksm.export_litert(model, tmp_path / "m.tflite", batch_size=0)
    with pytest.raises(ValueError, match="quantize_routers"):
        ksm.export_litert(model, tmp_path / "m.tflite", quantize_routers=True)
    with pytest.raises(ValueError, match="quantize_routers"):
        ksm.export_litert(model, tmp_path / "m.tflite", quantization="int8",
                          representative_data=np.zeros((4, 16, 32), "float32"),
                          quantize_routers="yes")
    assert os.listdir(tmp_path) == []


def test_unwritable_directory(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root: simulate what any other user sees
        real_access = os.access
        monkeypatch.setattr(
            os, "access",
            lambda path, mode, **kw: False if os.fspath(path) == str(locked) and mode & os.W_OK
            else real_access(path, mode, **kw),
        )
    with pytest.raises(ValueError, match="not writable"):
        ksm.export_litert(_model(), locked / "m.tflite")
    assert os.listdir(locked) == []


def test_export_replaces_existing_file_atomically(tmp_path, token_choice_export):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the child writes with the same function; checked on TensorFlow")
    model, path = token_choice_export
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    ksm.export_litert(model, target)
    assert target.read_bytes() == open(path, "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_runner_checks_inputs_and_pads_last_batch(token_choice_export, data):
    model, path = token_choice_export
    runner = LiteRTModel(path)
    assert runner.batch_size == 1
    assert runner(data[:3]).shape == (3, 3)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        runner(np.zeros((2, 8, 32), "float32"))
    with pytest.raises(ValueError, match="No LiteRT model"):
        LiteRTModel(os.path.join(os.path.dirname(path), "absent.tflite"))


def test_fixed_batch_size_export(tmp_path, data):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("batch size is passed to the child like every other option")
    model = _model()
    runner = LiteRTModel(ksm.export_litert(model, tmp_path / "b4.tflite", batch_size=4))
    assert runner.batch_size == 4
    got = runner(data)  # 6 images: one full batch, one padded
    want = keras.ops.convert_to_numpy(model.predict(data, verbose=0))
    assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-4


def test_moe_vit_with_convolutional_stem_is_builtin_only(tmp_path):
    """The stem's stride-2 "same" convolutions (asymmetric padding) and GELU
    convert to builtin ops and match Keras."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("conversion runs in the TensorFlow subprocess on JAX/PyTorch, "
                    "checked once by the token-choice export")
    from keras_sparse_moe.models import MoEViTBackbone
    from keras_sparse_moe.models import MoEViTImageClassifier

    keras.utils.set_random_seed(3)
    backbone = MoEViTBackbone(
        image_shape=(16, 16, 1), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32, num_experts=4, top_k=2, pooling="gap", stem_channels=[8, 16],
    )
    model = MoEViTImageClassifier(backbone, num_classes=3)
    path = ksm.export_litert(model, tmp_path / "stem.tflite", batch_size=2)
    ops = list_litert_ops(path)
    assert non_builtin_ops(ops) == [], ops
    assert "CONV_2D" in ops and "GELU" in ops, ops
    x = np.random.default_rng(1).random((4, 16, 16, 1), dtype=np.float32)
    got = LiteRTModel(path)(x)
    want = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    assert np.max(np.abs(got - want)) <= 1e-4
