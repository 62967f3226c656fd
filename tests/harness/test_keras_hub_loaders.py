"""keras-hub's generic loaders on saved dual-encoder presets (a LIMoE
contrastive task and a two-tower zero-shot classifier, saved once with the
project's `save_to_preset`): `keras_hub.models.Backbone`,
`keras_hub.tokenizers.Tokenizer` and `keras_hub.layers.ImageConverter`
`.from_preset(dir)` find the dual encoders' classes and restore what was
saved, and the project's task, preprocessor, tokenizer and image converter
classes load the same directories.

(keras-hub refuses `keras_hub.models.Task.from_preset` and
`keras_hub.models.Preprocessor.from_preset` for every model: a task or a
preprocessor is loaded through its own class.)"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_sparse_moe.models.moe_dual_encoder import LIMoEImageConverter
from keras_sparse_moe.models.moe_dual_encoder import LIMoETokenizer
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderImageConverter
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderPreprocessor
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderTokenizer
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderZeroShotClassifier
from keras_sparse_moe.models.moe_dual_encoder import MoETwoTowerImageConverter
from keras_sparse_moe.models.moe_dual_encoder import MoETwoTowerTokenizer
from keras_sparse_moe.presets import save_to_preset
from tests import configs

# keras-hub's lookup of classes and the preset files are the same on every
# backend (saving and loading on each backend: the harness's
# run_model_saving_test): run once, under PyTorch (eager: no graph to trace).
pytestmark = pytest.mark.single_backend("torch")

BATCH = 4
# Within the tiny backbones' 40-token vocabulary.
VOCABULARY = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "photo", "of", "the", "digit",
              "one", "two", "three", "."]
CAPTIONS = ["a photo of the digit one.", "two", "the digit three", "a photo"]
CLASS_NAMES = ["one", "two", "three"]
# Raw images twice the models' size, on load_digits' 0..16 scale.
RAW_IMAGES = configs.images(BATCH, (16, 16, 1)) * 16.0
NAMES = ("limoe", "two_tower")
PER_BACKBONE = {
    "limoe": (LIMoETokenizer, LIMoEImageConverter),
    "two_tower": (MoETwoTowerTokenizer, MoETwoTowerImageConverter),
}


def _preprocessor(backbone):
    return MoEDualEncoderPreprocessor.for_backbone(
        backbone, scale=1 / 16, tokenizer=MoEDualEncoderTokenizer(vocabulary=VOCABULARY)
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory, limoe_backbone, two_tower_backbone):
    """{name: (task, preset directory)}, each task saved once."""
    root = tmp_path_factory.mktemp("dual_encoder_presets")
    tasks = {
        "limoe": MoEDualEncoderContrastive(limoe_backbone, preprocessor=_preprocessor(
            limoe_backbone)),
        "two_tower": MoEDualEncoderZeroShotClassifier(
            two_tower_backbone, class_names=CLASS_NAMES,
            preprocessor=_preprocessor(two_tower_backbone),
            templates=["a photo of the digit {}.", "{}"],
        ),
    }
    return {name: (task, save_to_preset(task, str(root / name))) for name, task in tasks.items()}


def _raw_inputs(task):
    if isinstance(task, MoEDualEncoderContrastive):
        return {"images": RAW_IMAGES, "prompts": CAPTIONS}
    return RAW_IMAGES


def _assert_close(actual, expected):
    for a, e in zip(keras.tree.flatten(actual), keras.tree.flatten(expected)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(e), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("name", NAMES)
def test_keras_hub_backbone_loader(saved, name):
    task, directory = saved[name]
    backbone = keras_hub.models.Backbone.from_preset(directory)
    assert type(backbone) is type(task.backbone)
    batch = configs.image_text_batch(BATCH)
    _assert_close(backbone.predict(batch, verbose=0), task.backbone.predict(batch, verbose=0))


@pytest.mark.parametrize("name", NAMES)
def test_keras_hub_tokenizer_and_image_converter_loaders(saved, name):
    task, directory = saved[name]
    tokenizers = [keras_hub.tokenizers.Tokenizer.from_preset(directory)]
    converters = [keras_hub.layers.ImageConverter.from_preset(directory)]
    # The project's classes: the shared ones and the ones of this backbone.
    tokenizer_cls, converter_cls = PER_BACKBONE[name]
    for cls in (MoEDualEncoderTokenizer, tokenizer_cls):
        tokenizers.append(cls.from_preset(directory))
    for cls in (MoEDualEncoderImageConverter, converter_cls):
        converters.append(cls.from_preset(directory))
    for tokenizer in tokenizers:
        assert isinstance(tokenizer, MoEDualEncoderTokenizer)
        assert tokenizer.get_vocabulary() == VOCABULARY
    expected = task.preprocessor.image_converter(RAW_IMAGES)
    for converter in converters:
        assert isinstance(converter, MoEDualEncoderImageConverter)
        assert tuple(converter.image_size) == task.backbone.image_shape[:2]
        _assert_close(converter(RAW_IMAGES), expected)


def test_other_backbones_classes_are_refused(saved):
    _, directory = saved["limoe"]
    with pytest.raises(ValueError, match="compatible with LIMoEBackbone"):
        MoETwoTowerTokenizer.from_preset(directory)


@pytest.mark.parametrize("name", NAMES)
def test_task_and_preprocessor_load_the_directory(saved, name):
    task, directory = saved[name]
    loaded = type(task).from_preset(directory)
    assert type(loaded.backbone) is type(task.backbone)
    raw = _raw_inputs(task)
    _assert_close(loaded.predict(raw, verbose=0), task.predict(raw, verbose=0))
    preprocessor = MoEDualEncoderPreprocessor.from_preset(directory)
    packed = preprocessor({"images": RAW_IMAGES, "prompts": CAPTIONS})
    _assert_close(packed, task.preprocessor({"images": RAW_IMAGES, "prompts": CAPTIONS}))
