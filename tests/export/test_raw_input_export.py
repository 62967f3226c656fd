"""LiteRT export with the preprocessing: the file takes raw images (uint8 or
float, of a declared size) and matches `task.predict` on them, with a fixed
or a dynamic batch."""

import keras
import numpy as np
import pytest

import keras_sparse_moe as ksm
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export.litert import litert_metadata
from keras_sparse_moe.export.litert import non_builtin_ops
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models.moe_vit import MoEViTImageConverter
from tests import configs
from tests.export.backends import not_repeated_on_jax

RAW_SHAPE = (4, 4, 1)


def _classifier(moe_vit_backbone, raw_image_shape=RAW_SHAPE):
    converter = MoEViTImageConverter(image_size=configs.MOE_VIT["image_shape"][:2], scale=1 / 16,
                                     value_range=(0, 16), raw_image_shape=raw_image_shape)
    return MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                 preprocessor=MoEViTImageClassifierPreprocessor(converter))


@pytest.fixture(scope="module")
def raw_export(moe_vit_backbone, tmp_path_factory):
    """One dynamic-batch export of a tiny classifier with its preprocessing
    (the default), raw 4x4x1 uint8 images upsampled to the model's 8x8."""
    keras.utils.set_random_seed(3)
    model = _classifier(moe_vit_backbone)
    return model, ksm.export_litert(model, tmp_path_factory.mktemp("raw") / "m.tflite",
                                    batch_size=None)


@not_repeated_on_jax
def test_raw_uint8_images_match_predict_for_any_batch(raw_export):
    model, path = raw_export
    runner = LiteRTModel(path)
    assert runner.raw_input and runner.batch_size is None
    assert np.dtype(runner.input["dtype"]) == np.uint8
    assert tuple(runner.input["shape"][1:]) == RAW_SHAPE
    assert non_builtin_ops(runner.ops) == [] and "RESIZE_BILINEAR" in runner.ops
    images = np.random.default_rng(0).integers(0, 17, (5,) + RAW_SHAPE).astype("uint8")
    # Keras' resizing rounds integer arrays after interpolating (eager only), the
    # graph does not: the reference is predict on the same raw values as float32.
    want = keras.ops.convert_to_numpy(model.predict(images.astype("float32"), verbose=0))
    for n in (5, 1, 3):  # the interpreter is resized to each batch
        np.testing.assert_allclose(runner(images[:n]), want[:n], atol=1e-4)
    metadata = litert_metadata(path)
    assert metadata["input"] == "raw images" and metadata["raw_image_shape"] == list(RAW_SHAPE)
    assert metadata["value_range"] == [0.0, 16.0] and metadata["batch_size"] is None
    assert "resized to 8x8" in runner.describe_input()
    # A uint8 input does not wrap values it cannot hold.
    with pytest.raises(ValueError, match=r"takes uint8 images .* \[0, 300\]"):
        runner(np.concatenate([np.zeros((1,) + RAW_SHAPE), np.full((1,) + RAW_SHAPE, 300.0)]))


@pytest.mark.single_backend
def test_rgb_float_images_for_a_grayscale_model_with_a_fixed_batch(moe_vit_backbone, tmp_path):
    model = _classifier(moe_vit_backbone)
    path = ksm.export_litert(model, tmp_path / "rgb.tflite", batch_size=2,
                             input_image_shape=(6, 6, 3), input_dtype="float32")
    runner = LiteRTModel(path)
    assert runner.batch_size == 2 and tuple(runner.input["shape"]) == (2, 6, 6, 3)
    assert "RGB -> grayscale" in runner.describe_input()
    rgb = np.random.default_rng(1).uniform(0, 16, (3, 6, 6, 3)).astype("float32")
    gray = np.sum(rgb * np.array([0.2989, 0.587, 0.114], "float32"), axis=-1, keepdims=True)
    want = keras.ops.convert_to_numpy(model.predict(gray, verbose=0))
    np.testing.assert_allclose(runner(rgb), want, atol=1e-4)


@pytest.mark.single_backend
def test_preprocessing_arguments_are_checked(moe_vit_backbone, tmp_path):
    model = _classifier(moe_vit_backbone)
    out = tmp_path / "m.tflite"
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a task with an image preprocessor"):
        ksm.export_litert(plain, out, include_preprocessing=True)
    with pytest.raises(ValueError, match=r"`input_dtype` must be one of \['uint8', 'float32'\]"):
        ksm.export_litert(model, out, input_dtype="int16")
    with pytest.raises(ValueError, match="`input_image_shape` must be"):
        ksm.export_litert(model, out, input_image_shape=(4, 4, 2))
    with pytest.raises(ValueError, match="include_preprocessing=False"):
        ksm.export_litert(model, out, include_preprocessing=False, input_image_shape=(4, 4))
    with pytest.raises(ValueError, match="use `input_image_shape`"):
        ksm.export_litert(model, out, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"int >= 1 or None \(dynamic\)"):
        ksm.export_litert(model, out, batch_size=0)
    assert not out.exists()


@pytest.mark.single_backend
def test_without_preprocessing_the_file_takes_model_inputs(moe_vit_backbone, tmp_path):
    model = _classifier(moe_vit_backbone)
    runner = LiteRTModel(ksm.export_litert(model, tmp_path / "m.tflite",
                                           include_preprocessing=False))
    assert not runner.raw_input and np.dtype(runner.input["dtype"]) == np.float32
    assert tuple(runner.input["shape"]) == (1,) + tuple(configs.MOE_VIT["image_shape"])
    x = np.random.default_rng(2).random((2,) + tuple(configs.MOE_VIT["image_shape"]), "float32")
    np.testing.assert_allclose(runner(x), keras.ops.convert_to_numpy(model(x)), atol=1e-4)
