"""The embedded scikit-learn digits: 1,797 8x8 grayscale images, values 0..16.

The data is `sklearn.datasets.load_digits()` (a copy of the test set of the
UCI "Optical Recognition of Handwritten Digits" data), shipped inside the
package as `digits.npz` (regenerate with
`python tools/make_digits.py` in a checkout); scikit-learn is not needed.

Fixed split, in scikit-learn's order:

- test: the last 20%, samples 1438..1796 (359 images), never trained on;
- train: samples 0..1437 (1,438 images), of which the last
  `round(validation_fraction * 1438)` (default 144: samples 1294..1437) form
  the validation split when `validation_fraction > 0`.
"""

import functools
import importlib.resources
import logging

import numpy as np

from keras_sparse_moe.data.splitting import SPLITS
from keras_sparse_moe.data.splitting import check_fraction
from keras_sparse_moe.data.splitting import num_held_out
from keras_sparse_moe.utils.validation import check_choice

logger = logging.getLogger("keras_sparse_moe.data")

DIGITS_NUM_EXAMPLES = 1797
DIGITS_TEST_START = 1438
DIGITS_MAX_VALUE = 16.0
DIGITS_CLASS_NAMES = tuple(str(d) for d in range(10))


@functools.lru_cache(maxsize=None)
def read_packaged_digits(filename):
    """`(images, labels)` of a digits file shipped in `keras_sparse_moe.data`
    (`digits.npz`, `optdigits_train.npz`), read once and read-only.

    Example:
    >>> images, labels = read_packaged_digits("optdigits_train.npz")
    >>> images.shape, labels.shape, images.flags.writeable
    ((3823, 8, 8), (3823,), False)
    """
    resource = importlib.resources.files("keras_sparse_moe.data").joinpath(filename)
    with resource.open("rb") as f, np.load(f) as data:
        images = data["images"]
        labels = data["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _read_digits():
    return read_packaged_digits("digits.npz")


def digits_split_ranges(validation_fraction=0.1):
    """`{split: (start, stop)}` sample ranges of the fixed digits split.

    Example:
    >>> digits_split_ranges(0.1)
    {'train': (0, 1294), 'validation': (1294, 1438), 'test': (1438, 1797), 'all': (0, 1797)}
    """
    validation_fraction = check_fraction("validation_fraction", validation_fraction)
    n_val = num_held_out(DIGITS_TEST_START, validation_fraction)
    train_stop = DIGITS_TEST_START - n_val
    ranges = {"train": (0, train_stop)}
    if n_val:
        ranges["validation"] = (train_stop, DIGITS_TEST_START)
    ranges["test"] = (DIGITS_TEST_START, DIGITS_NUM_EXAMPLES)
    ranges["all"] = (0, DIGITS_NUM_EXAMPLES)
    return ranges


def digits_split_indices(validation_fraction=0.1):
    """`{split: sample indices}` of the digits split (see the module docstring).

    Example:
    >>> idx = digits_split_indices(0.1)
    >>> {k: (len(v), int(v[0]), int(v[-1])) for k, v in idx.items()}
    {'train': (1294, 0, 1293), 'validation': (144, 1294, 1437), 'test': (359, 1438, 1796), 'all': (1797, 0, 1796)}
    """
    return {k: np.arange(a, b) for k, (a, b) in digits_split_ranges(validation_fraction).items()}


def load_digits(split="train", validation_fraction=0.1, normalize=False):
    """Load a split of the embedded scikit-learn digits as NumPy arrays.

    Args:
        split: `"train"`, `"validation"`, `"test"` or `"all"` (see the module
            docstring for the fixed boundaries).
        validation_fraction: fraction in [0, 1) of the 1,438 training samples
            held out (from the end) as the validation split; 0 makes `"train"`
            all 1,438 samples and `"validation"` unavailable.
        normalize: False returns uint8 values 0..16 (`DIGITS_MAX_VALUE`);
            True returns float32 values in [0, 1].

    Returns:
        `(images, labels)`: images (N, 8, 8, 1), labels (N,) int32 in 0..9.

    Example:
    >>> images, labels = load_digits("test")
    >>> images.shape, images.dtype.name, labels.shape, int(images.max())
    ((359, 8, 8, 1), 'uint8', (359,), 16)
    """
    check_choice("split", split, SPLITS)
    indices = digits_split_indices(validation_fraction)
    if split not in indices:
        raise ValueError(
            "The digits 'validation' split is empty because validation_fraction=0; "
            "pass validation_fraction > 0 (e.g. 0.1) or use split='train'."
        )
    index = indices[split]
    images, labels = _read_digits()
    images = images[index][:, :, :, None]
    images = images.astype(np.float32) / DIGITS_MAX_VALUE if normalize else images.copy()
    return images, labels[index].astype(np.int32)
