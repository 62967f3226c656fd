"""`extra_train_data`: other labelled data joins the train split only; the
validation and test splits (and cross-validation blocks) stay the dataset's."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import load_optdigits_train
from keras_sparse_moe.data.sources import _join_extra_training

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


def _all(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def test_train_split_is_the_union_and_the_other_splits_are_unchanged():
    options = dict(image_size=8, batch_size=256, rescale=False, validation_fraction=0.2, drop_remainder=False)
    plain = build_datasets("digits", **options)
    joined = build_datasets("digits", extra_train_data="optdigits-train", **options)
    assert joined.info.counts == {"train": 1150 + 3823, "validation": 288, "test": 359}
    assert joined.info.splits["train"].endswith("optdigits-train train (3823)")
    assert plain.info.counts["train"] == 1150  # the plain call is not affected
    for split in ("validation", "test"):
        np.testing.assert_array_equal(_all(getattr(joined, split))[1], _all(getattr(plain, split))[1])
    images, labels = _all(joined.train)
    assert len(labels) == 4973
    expected = np.bincount(load_digits("train", validation_fraction=0.2)[1], minlength=10) + np.bincount(
        load_optdigits_train("all")[1], minlength=10)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), expected)
    # Shuffled together, not one after the other: optdigits images show up in the first batch.
    first_batch = next(iter(joined.train))[0].numpy().astype(np.uint8)[..., 0]
    optdigits = {image.tobytes() for image in load_optdigits_train("all")[0][..., 0]}
    assert 0 < sum(image.tobytes() in optdigits for image in first_batch) < len(first_batch)


def test_extra_data_joins_the_whole_training_split():
    data = build_datasets("digits", image_size=8, batch_size=32, validation_fraction=0,
                          extra_train_data=["optdigits-train"])
    assert data.info.counts == {"train": 1438 + 3823, "test": 359}


@pytest.mark.parametrize(
    "extra, match",
    [
        (3, "must be None, a dataset spec or a non-empty list"),
        ([], "non-empty list"),
        ("digits", "as the dataset itself"),
        (["optdigits-train", "optdigits-train"], "twice"),
        ("optdigit", "Unknown dataset spec 'optdigit'"),
    ],
)
def test_bad_extra_train_data(extra, match):
    with pytest.raises(ValueError, match=match):
        build_datasets("digits", image_size=8, extra_train_data=extra)


def test_extra_data_with_other_classes_or_images_is_refused(tmp_path):
    root = tmp_path / "shapes"
    for name in ("circle", "square"):
        for i in range(5):
            os.makedirs(root / name, exist_ok=True)
            Image.new("L", (8, 8), 40 * i).save(root / name / f"{i}.png")
    with pytest.raises(ValueError, match=r"does not match 'digits': different class names, pixel range"):
        build_datasets("digits", image_size=8, extra_train_data=f"folder:{root}")


def test_examples_that_cannot_be_joined_are_named():
    ds = tf.data.Dataset.from_tensor_slices({"image": np.zeros((2, 8, 8, 1), np.uint8), "label": [0, 1]})
    other = tf.data.Dataset.from_tensor_slices({"image": np.zeros((2, 6, 6, 3), np.uint8), "label": [0, 1]})
    extra = types.SimpleNamespace(info=types.SimpleNamespace(spec="other"),
                                  examples=lambda split, training, seed: (other, 2))
    with pytest.raises(ValueError, match="'other' has examples .* cannot join those of 'digits'"):
        _join_extra_training("digits", ds, 2, [extra], 0)
    joined, count = _join_extra_training("digits", ds, 2, [types.SimpleNamespace(
        info=types.SimpleNamespace(spec="same"), examples=lambda split, training, seed: (ds, 2))], 0)
    assert count == 4 and sum(1 for _ in joined) == 4
