"""What raw images a preset expects: declared by its image converter, shown by
`list_presets`, changed by `from_preset` overrides, checked once by the
classifiers' `predict` / `evaluate` / `fit`; and what training says when the
data's images differ from the model's."""

import warnings

import keras
import numpy as np
import pytest

from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models import raw_image_input
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models.moe_vit import MoEViTImageConverter
from keras_sparse_moe.presets import from_preset
from keras_sparse_moe.presets import list_presets
from keras_sparse_moe.recipes.classifier import data_conversion_message
from tests import configs


def _converter(model):
    return model.preprocessor.image_converter


@pytest.mark.single_backend
def test_presets_state_the_raw_input_they_expect():
    rows = {row["name"]: row for row in list_presets(params=False)}
    assert rows["moe_vit_tiny_digits"]["input"] == "8x8x1, values 0..16"
    assert rows["moe_vit_tiny"]["input"] == "8x8x1, values 0..16"
    assert rows["vmoe_s32_e8_k2_last2"]["input"] == "224x224x3, values 0..255"
    converter = _converter(from_preset("moe_vit_tiny_digits"))
    assert converter.value_range == (0.0, 16.0) and converter.raw_image_shape == (8, 8, 1)


@pytest.mark.single_backend
def test_an_rgb_image_shape_override_takes_8bit_images():
    model = from_preset("moe_vit_tiny", image_shape=(32, 32, 3), num_classes=4)
    converter = _converter(model)
    # Not the digits' 1/16: 0..255 maps to the model's [0, 1] input range.
    assert converter.scale == pytest.approx(1 / 255) and converter.value_range == (0.0, 255.0)
    assert converter.raw_image_shape == (32, 32, 3) and converter.image_size == (32, 32)


@pytest.mark.single_backend
def test_scale_offset_and_value_range_overrides():
    converter = _converter(from_preset("moe_vit_tiny", scale=1 / 127.5, offset=-1.0))
    assert (converter.scale, converter.offset) == (1 / 127.5, -1.0)
    # The declared raw range is the one mapping onto the model's [0, 1].
    assert converter.value_range == pytest.approx((127.5, 255.0))
    converter = _converter(from_preset("moe_vit_tiny_digits", value_range=(0, 255)))
    assert converter.scale == pytest.approx(1 / 255) and converter.offset is None
    with pytest.raises(ValueError, match=r"`value_range` must be .* received value_range=\(5, 1\)"):
        from_preset("moe_vit_tiny", value_range=(5, 1))
    with pytest.raises(ValueError, match="Override `scale` must be a finite float"):
        from_preset("moe_vit_tiny", scale="big")
    with pytest.raises(ValueError, match="built as a backbone"):
        from_preset("vmoe_s32_e8_k2_last2", scale=1.0)


@pytest.mark.single_backend
def test_converter_config_round_trips():
    converter = MoEViTImageConverter(image_size=(8, 8), scale=[0.5, 0.25, 0.125],
                                     value_range=(0, 255), raw_image_shape=(4, 4, 3))
    restored = MoEViTImageConverter.from_config(converter.get_config())
    assert restored.value_range == (0.0, 255.0) and restored.raw_image_shape == (4, 4, 3)
    assert restored.rescaled_to((0, 1))["scale"] == pytest.approx((127.5, 63.75, 31.875))
    with pytest.raises(ValueError, match="raw_image_shape"):
        MoEViTImageConverter(raw_image_shape=(4, 4, 2))


def test_predict_and_evaluate_warn_once_on_images_out_of_range(moe_vit_backbone, monkeypatch):
    keras.utils.set_random_seed(0)
    converter = MoEViTImageConverter(image_size=(8, 8), scale=1 / 16, value_range=(0, 16))
    model = MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                  preprocessor=MoEViTImageClassifierPreprocessor(converter))
    model.compile()
    digits = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)).astype("float32")
    labels = np.zeros((4,), "int32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(digits, verbose=0)
        assert not [w for w in caught if "expects raw values" in str(w.message)]
        model.predict(digits * 255 / 16, verbose=0)  # 0..255 pixels into a 0..16 model
        model.evaluate(digits * 255 / 16, labels, verbose=0)
        model.predict(digits / 16, verbose=0)  # [0, 1] floats
    messages = [str(w.message) for w in caught if "expects raw values" in str(w.message)]
    assert len(messages) == 1  # once per model
    assert "values in [0, 255]" in messages[0] and "[0, 16]" in messages[0]
    fresh = MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                  preprocessor=MoEViTImageClassifierPreprocessor(converter))
    with pytest.warns(UserWarning, match=r"values in \[0, 1\]"):
        fresh.predict(keras.ops.convert_to_tensor(digits / 16), verbose=0)
    # A tf.data pipeline: its first batch is checked.
    import tensorflow as tf

    fresh = MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                  preprocessor=MoEViTImageClassifierPreprocessor(converter))
    pipeline = tf.data.Dataset.from_tensor_slices((digits * 255 / 16, labels)).batch(2)
    with pytest.warns(UserWarning, match=r"values in \[0, 255\]"):
        fresh.evaluate(pipeline, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                      preprocessor=MoEViTImageClassifierPreprocessor(converter))
        in_range = tf.data.Dataset.from_tensor_slices((digits, labels)).batch(2)
        fresh.evaluate(in_range, verbose=0)
    assert not [w for w in caught if "expects raw values" in str(w.message)]
    # The model reads a dataset's first batch for the check once, not on every
    # later call with it; a new dataset is read.
    reads = []
    read = raw_image_input._first_batch_images
    monkeypatch.setattr(raw_image_input, "_first_batch_images",
                        lambda x: reads.append(x) or read(x))
    fresh.evaluate(in_range, verbose=0)
    fresh.predict(in_range, verbose=0)
    assert reads == []
    fresh.evaluate(in_range.take(1), verbose=0)
    assert len(reads) == 1
    # `fit` checks its raw `x`, and not again the `validation_data` it has
    # preprocessed (the scaled images, in [0, 1], would look out of range).
    fresh = MoEViTImageClassifier(moe_vit_backbone, num_classes=configs.NUM_CLASSES,
                                  preprocessor=MoEViTImageClassifierPreprocessor(converter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = tf.data.Dataset.from_tensor_slices((digits, labels)).batch(2)
        fresh.compile(run_eagerly=keras.backend.backend() != "jax")  # 2 steps: no tracing
        fresh.fit(pairs, validation_data=pairs, verbose=0)
    assert not [w for w in caught if "expects raw values" in str(w.message)]


@pytest.mark.single_backend
def test_training_data_conversion_is_stated():
    message = data_conversion_message("folder:rgb", (32, 32, 3), (16, 16, 1), (8, 8, 1))
    assert "32x32x3 images" in message and "RGB -> grayscale" in message
    assert "resized to 16x16 (bilinear)" in message and "image_shape=[32,32,3]" in message
    # The data the preset is made for (the 8x8 digits, upsampled by design) is silent.
    assert data_conversion_message("digits", (8, 8, 1), (16, 16, 1), (8, 8, 1)) is None
    assert data_conversion_message("folder:x", (16, 16, 1), (16, 16, 1)) is None
