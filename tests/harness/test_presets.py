"""keras-hub's preset harness (`run_preset_test`) on the shipped presets
(package data, no network): an unknown name raises, the preset builds as
each class with and without its weights, and a forward pass has the
preset's output shape."""

import json
import os

import keras_hub
import pytest
from keras_hub.src.tests.test_case import TestCase

from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
from tests import configs

BATCH = 2


class MoEViTPresetTest(TestCase):
    # moe_vit_tiny_digits: 16x16x1 images in 4x4 patches, width 64, 10 classes.
    def test_backbone(self):
        self.run_preset_test(
            cls=MoEViTBackbone,
            preset="moe_vit_tiny_digits",
            input_data=configs.images(BATCH, (16, 16, 1)),
            expected_output_shape=(BATCH, 16, 64),
        )

    def test_classifier(self):
        self.run_preset_test(
            cls=MoEViTImageClassifier,
            preset="moe_vit_tiny_digits",
            input_data=configs.images(BATCH, (16, 16, 1)),
            expected_output_shape=(BATCH, 10),
        )


class LIMoEPresetTest(TestCase):
    # limoe_tiny_digits: 8x8x1 images, captions of 16 tokens, vocabulary 413.
    def test_backbone(self):
        self.run_preset_test(
            cls=LIMoEBackbone,
            preset="limoe_tiny_digits",
            input_data={
                "images": configs.images(BATCH, (8, 8, 1)),
                **configs.tokens(BATCH, length=16, vocabulary_size=413),
            },
            expected_output_shape={
                "image_embeddings": (BATCH, 64),
                "text_embeddings": (BATCH, 64),
                "logits": (BATCH, BATCH),
            },
        )


def _shipped(family):
    from keras_sparse_moe.presets import list_presets

    return [p["name"] for p in list_presets(family=family) if p["has_weights"]]


@pytest.mark.single_backend
@pytest.mark.parametrize("name", _shipped("moe_vit") + _shipped("moe_dual_encoder"))
def test_keras_hub_backbone_loader_reads_every_shipped_preset(name):
    from keras_sparse_moe.presets import get_preset

    directory = get_preset(name).weights_path
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
        saved_class = json.load(handle)["class_name"]
    backbone = keras_hub.models.Backbone.from_preset(directory)
    assert type(backbone).__name__ == saved_class
    # keras-hub's generic preprocessing loaders find the classes of this
    # backbone (for LIMoE: LIMoETokenizer, LIMoEImageConverter).
    with open(os.path.join(directory, "image_converter.json"), encoding="utf-8") as handle:
        saved_converter = json.load(handle)["class_name"]
    converter = keras_hub.layers.ImageConverter.from_preset(directory)
    assert type(converter).__name__ == saved_converter
    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
        tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(directory)
        assert type(tokenizer).__name__ == "MoEDualEncoderTokenizer"


@pytest.mark.single_backend
@pytest.mark.parametrize("name", _shipped("moe_vit") + _shipped("moe_dual_encoder"))
def test_preprocessing_classes_load_every_shipped_preset_by_name_and_directory(name):
    """The project's preprocessor, tokenizer and image converter read the
    registry's names and the preset directories, including a LIMoE preset for
    the classes declaring the dual encoders' base backbone class."""
    from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
    from keras_sparse_moe.models import MoEViTImageConverter
    from keras_sparse_moe.models.moe_dual_encoder import LIMoEImageConverter
    from keras_sparse_moe.models.moe_dual_encoder import LIMoETokenizer
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderImageConverter
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderPreprocessor
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderTokenizer
    from keras_sparse_moe.presets import get_preset

    directory = get_preset(name).weights_path
    with open(os.path.join(directory, "image_converter.json"), encoding="utf-8") as handle:
        saved_size = tuple(json.load(handle)["config"]["image_size"])
    if name.startswith("limoe"):
        # The per-backbone declarations return what the preset saved.
        classes = ((MoEDualEncoderPreprocessor, MoEDualEncoderPreprocessor),
                   (MoEDualEncoderTokenizer, MoEDualEncoderTokenizer),
                   (MoEDualEncoderImageConverter, MoEDualEncoderImageConverter),
                   (LIMoETokenizer, MoEDualEncoderTokenizer),
                   (LIMoEImageConverter, MoEDualEncoderImageConverter))
    else:
        classes = ((MoEViTImageClassifierPreprocessor, MoEViTImageClassifierPreprocessor),
                   (MoEViTImageConverter, MoEViTImageConverter))
    for cls, expected in classes:
        for preset in (name, directory):
            loaded = cls.from_preset(preset)
            assert isinstance(loaded, expected)
            converter = getattr(loaded, "image_converter", loaded)
            if hasattr(converter, "image_size"):
                assert tuple(converter.image_size) == saved_size
    with pytest.raises(ValueError, match="'moe_vit_tiny' is an architecture without saved"):
        MoEViTImageConverter.from_preset("moe_vit_tiny")
