"""The CLI decides whether a model is a dual encoder from its classes."""

import json
import os

import numpy as np
import pytest

from keras_sparse_moe import presets
from keras_sparse_moe.cli import _is_dual_encoder
from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive

# Backend-independent (Python only): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend

LIMOE = dict(vocabulary_size=20, image_shape=(4, 4, 1), patch_size=2, max_sequence_length=4,
             num_layers=2, num_heads=1, hidden_dim=4, mlp_dim=8, num_experts=2)
VIT = dict(image_shape=(4, 4, 1), patch_size=2, num_layers=2, num_heads=1, hidden_dim=4,
           mlp_dim=8, num_experts=2)


def test_registered_presets():
    assert _is_dual_encoder("limoe_tiny") and _is_dual_encoder("limoe_tiny_digits")
    assert not _is_dual_encoder("moe_vit_tiny")
    assert not _is_dual_encoder("no_such_preset")


def test_preset_directories_and_model_files(tmp_path):
    dual = MoEDualEncoderContrastive(LIMoEBackbone(**LIMOE))
    classifier = presets.from_preset("moe_vit_tiny", load_weights=False, **VIT)
    for name, model, expected in (("dual", dual, True), ("classifier", classifier, False)):
        directory = presets.save_to_preset(model, tmp_path / name)
        assert _is_dual_encoder(directory) is expected
        assert _is_dual_encoder(presets.save_to_preset(model.backbone, tmp_path / f"{name}_b")) \
            is expected
        path = os.path.join(tmp_path, f"{name}.keras")
        model.save(path)
        assert _is_dual_encoder(path) is expected


def test_class_names_in_the_config_text_do_not_count(tmp_path):
    # A classifier whose name mentions a dual encoder is still a classifier.
    model = presets.from_preset("moe_vit_tiny", load_weights=False, name="MoEDualEncoderLike",
                                **VIT)
    directory = presets.save_to_preset(model, tmp_path / "named")
    with open(os.path.join(directory, "task.json")) as handle:
        assert "MoEDualEncoder" in json.dumps(json.load(handle))
    assert not _is_dual_encoder(directory)


def test_unreadable_files_are_not_dual_encoders(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(np.zeros(8, "uint8").tobytes())
    assert not _is_dual_encoder(str(path))
