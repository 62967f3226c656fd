"""The embedded digits: identical to scikit-learn's, fixed split boundaries."""

import numpy as np
import pytest

from keras_sparse_moe.data import DIGITS_CLASS_NAMES
from keras_sparse_moe.data import digits_split_indices
from keras_sparse_moe.data import digits_split_ranges
from keras_sparse_moe.data import load_digits

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


def test_all_equals_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    images, labels = load_digits("all")
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_fixed_split_sizes_and_boundaries():
    all_images, all_labels = load_digits("all")
    train, train_labels = load_digits("train", validation_fraction=0.0)
    test, test_labels = load_digits("test")
    assert len(train) == 1438 and len(test) == 359
    np.testing.assert_array_equal(train, all_images[:1438])
    np.testing.assert_array_equal(test, all_images[1438:])
    np.testing.assert_array_equal(test_labels, all_labels[1438:])
    assert sorted(set(test_labels.tolist())) == list(range(10))


def test_validation_is_carved_from_the_end_of_train_never_from_test():
    all_images, _ = load_digits("all")
    train, _ = load_digits("train", validation_fraction=0.1)
    val, _ = load_digits("validation", validation_fraction=0.1)
    assert (len(train), len(val)) == (1294, 144)
    np.testing.assert_array_equal(np.concatenate([train, val]), all_images[:1438])
    assert digits_split_ranges(0.25)["validation"] == (1078, 1438)
    assert digits_split_ranges(0.25)["test"] == (1438, 1797)


def test_normalize_and_copies():
    images, _ = load_digits("test", normalize=True)
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() == 1.0
    raw, _ = load_digits("test")
    raw[:] = 0  # a copy: the cached data is untouched
    assert load_digits("test")[0].max() == 16
    assert DIGITS_CLASS_NAMES == tuple("0123456789")


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("training")
    with pytest.raises(ValueError, match="validation_fraction"):
        load_digits("train", validation_fraction=1.0)
    with pytest.raises(ValueError, match="validation_fraction=0"):
        load_digits("validation", validation_fraction=0.0)
