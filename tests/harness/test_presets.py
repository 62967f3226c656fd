"""keras-hub's preset harness (`run_preset_test`) on the shipped presets
(package data, no network): an unknown name raises, the preset builds as
each class with and without its weights, and a forward pass has the
preset's output shape."""

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
