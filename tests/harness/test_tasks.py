"""keras-hub's task harness (`run_task_test`, `run_model_saving_test`) on
every task: serialization, the preprocessor's output matching the model's
inputs, `predict` on arrays, on a `tf.data` dataset and with split
preprocessing (all equal), `fit` the same three ways, `compile=False`
refusing to fit, and a `.keras` save and load with equal outputs."""

import keras
import numpy as np
from keras_hub.src.tests.test_case import TestCase

from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderPreprocessor
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderZeroShotClassifier
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderTokenizer
from tests import configs

BATCH = 4
# Raw images twice the model's size: the preprocessors resize and rescale.
RAW_IMAGES = configs.images(BATCH, (16, 16, 1)) * 16.0
LABELS = np.array([0, 1, 2, 1])
CAPTIONS = ["a photo of the digit one.", "two", "the number 3", "a handwritten seven"]
CLASS_NAMES = ["zero", "one", "two"]


def classifier_kwargs():
    backbone = MoEViTBackbone(**configs.MOE_VIT)
    return {
        "backbone": backbone,
        "num_classes": configs.NUM_CLASSES,
        "preprocessor": MoEViTImageClassifierPreprocessor.for_backbone(backbone, scale=1 / 16),
    }


def limoe_backbone():
    # The shipped tokenizer's vocabulary (the task tokenizes real captions).
    vocabulary_size = MoEDualEncoderTokenizer().vocabulary_size()
    return LIMoEBackbone(**{**configs.LIMOE, "vocabulary_size": vocabulary_size})


class MoEViTImageClassifierTest(TestCase):
    def test_task_basics(self):
        self.run_task_test(
            cls=MoEViTImageClassifier,
            init_kwargs=classifier_kwargs(),
            train_data=(RAW_IMAGES, LABELS),
            expected_output_shape=(BATCH, configs.NUM_CLASSES),
            batch_size=BATCH,
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=MoEViTImageClassifier,
            init_kwargs=classifier_kwargs(),
            input_data=configs.images(BATCH, configs.MOE_VIT["image_shape"]),
        )


class MoEDualEncoderZeroShotClassifierTest(TestCase):
    def init_kwargs(self):
        backbone = limoe_backbone()
        return {
            "backbone": backbone,
            "class_names": CLASS_NAMES,
            "templates": ["a photo of the digit {}.", "{}"],
            "preprocessor": MoEDualEncoderPreprocessor.for_backbone(backbone, scale=1 / 16),
        }

    def test_task_basics(self):
        self.run_task_test(
            cls=MoEDualEncoderZeroShotClassifier,
            init_kwargs=self.init_kwargs(),
            # At the model's size: no resizing, whose float rounding differs
            # between tf.data (split preprocessing) and the backend, and is
            # magnified by the logit scale (1 / 0.07) past the harness's 1e-6.
            train_data=(configs.images(BATCH, configs.LIMOE["image_shape"]) * 16.0, LABELS),
            expected_output_shape=(BATCH, len(CLASS_NAMES)),
            # One batch for arrays and datasets alike: the harness compares
            # their predictions at 1e-6, closer than float32 rounding of
            # differently batched matmuls.
            batch_size=BATCH,
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=MoEDualEncoderZeroShotClassifier,
            init_kwargs=self.init_kwargs(),
            input_data=configs.images(BATCH, configs.MOE_VIT["image_shape"]),
        )


class MoEDualEncoderContrastiveTest(TestCase):
    def init_kwargs(self):
        backbone = limoe_backbone()
        return {
            "backbone": backbone,
            "preprocessor": MoEDualEncoderPreprocessor.for_backbone(backbone, scale=1 / 16),
        }

    def test_task_basics(self):
        # keras-hub's harness runs `preprocessor(*train_data)[0]`, i.e. it
        # expects labelled data: like keras-hub's own preprocessors, this one
        # returns `x` alone when there is no `y`. The task's documented
        # explicit targets, the (batch, batch) matrix of matching pairs (here
        # the identity: caption i describes image i), are what it trains on
        # without labels (tests/models/test_moe_dual_encoder_tasks.py fits on
        # the pairs alone).
        self.run_task_test(
            cls=MoEDualEncoderContrastive,
            init_kwargs=self.init_kwargs(),
            # Images at the model's size (see the zero-shot test: resizing
            # rounds differently in tf.data and in the backend).
            train_data=(
                {"images": configs.images(BATCH, configs.LIMOE["image_shape"]) * 16.0,
                 "prompts": CAPTIONS},
                np.eye(BATCH, dtype="float32"),
            ),
            expected_output_shape=(BATCH, BATCH),
            batch_size=BATCH,
        )

    def test_saved_model(self):
        kwargs = self.init_kwargs()
        self.run_model_saving_test(
            cls=MoEDualEncoderContrastive,
            init_kwargs=kwargs,
            input_data={
                "images": configs.images(BATCH, configs.LIMOE["image_shape"]),
                **keras.tree.map_structure(
                    keras.ops.convert_to_numpy, kwargs["preprocessor"]({"prompts": CAPTIONS})
                ),
            },
        )
