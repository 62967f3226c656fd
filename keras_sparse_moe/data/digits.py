"""The embedded scikit-learn digits: 1,797 8x8 grayscale images, values 0..16.

The data is `sklearn.datasets.load_digits()` (a copy of the test set of the
UCI "Optical Recognition of Handwritten Digits" data), shipped inside the
package as `digits.npz` (regenerate with
`python -m keras_sparse_moe.data._make_digits`); scikit-learn is not needed.

Fixed split, in scikit-learn's order:

- test: the last 20%, samples 1438..1796 (359 images), never trained on;
- train: samples 0..1437 (1,438 images), of which the last
  `round(validation_fraction * 1438)` (default 144: samples 1294..1437) form
  the validation split when `validation_fraction > 0`.

Cross-validation (`validation_fold=(k, n)`): the 1,438 training samples are
cut into `n` contiguous blocks in scikit-learn's order (`numpy.array_split`
boundaries) and block `k` is the validation split, the other blocks the train
split. Contiguous blocks, not shuffled ones, because neighbouring samples
tend to come from the same writers: a held-out block asks, like the test
split, how well a model reads handwriting it has not seen. The test split
never changes.
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


def check_validation_fold(validation_fold):
    """Check a `(k, n)` cross-validation fold: ints with `2 <= n <= 1438` and
    `0 <= k < n`; None passes through.

    Example:
    >>> check_validation_fold((1, 5)), check_validation_fold(None)
    ((1, 5), None)
    """
    if validation_fold is None:
        return None
    ok = (
        isinstance(validation_fold, (tuple, list))
        and len(validation_fold) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in validation_fold)
    )
    if ok:
        k, n = (int(v) for v in validation_fold)
        ok = 2 <= n <= DIGITS_TEST_START and 0 <= k < n
    if not ok:
        raise ValueError(
            "Argument `validation_fold` must be None or a pair (k, n) of ints with "
            f"2 <= n <= {DIGITS_TEST_START} and 0 <= k < n (hold out block k of n of the "
            f"training samples); received validation_fold={validation_fold!r}."
        )
    return (k, n)


def digits_fold_range(validation_fold):
    """`(start, stop)` of the training samples that fold `(k, n)` holds out.

    Example:
    >>> [digits_fold_range((k, 5)) for k in range(5)]
    [(0, 288), (288, 576), (576, 864), (864, 1151), (1151, 1438)]
    """
    k, n = check_validation_fold(validation_fold)
    size, extra = divmod(DIGITS_TEST_START, n)
    start = k * size + min(k, extra)
    return start, start + size + (1 if k < extra else 0)


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


def digits_split_indices(validation_fraction=0.1, validation_fold=None):
    """`{split: sample indices}` of the digits split (see the module docstring).

    Example:
    >>> idx = digits_split_indices(validation_fold=(1, 5))
    >>> {k: (len(v), int(v[0]), int(v[-1])) for k, v in idx.items()}
    {'train': (1150, 0, 1437), 'validation': (288, 288, 575), 'test': (359, 1438, 1796), 'all': (1797, 0, 1796)}
    """
    if validation_fold is None:
        return {k: np.arange(a, b) for k, (a, b) in digits_split_ranges(validation_fraction).items()}
    start, stop = digits_fold_range(validation_fold)
    training = np.arange(DIGITS_TEST_START)
    return {
        "train": np.concatenate([training[:start], training[stop:]]),
        "validation": training[start:stop],
        "test": np.arange(DIGITS_TEST_START, DIGITS_NUM_EXAMPLES),
        "all": np.arange(DIGITS_NUM_EXAMPLES),
    }


def load_digits(split="train", validation_fraction=0.1, normalize=False, validation_fold=None):
    """Load a split of the embedded scikit-learn digits as NumPy arrays.

    Args:
        split: `"train"`, `"validation"`, `"test"` or `"all"` (see the module
            docstring for the fixed boundaries).
        validation_fraction: fraction in [0, 1) of the 1,438 training samples
            held out (from the end) as the validation split; 0 makes `"train"`
            all 1,438 samples and `"validation"` unavailable.
        normalize: False returns uint8 values 0..16 (`DIGITS_MAX_VALUE`);
            True returns float32 values in [0, 1].
        validation_fold: None, or `(k, n)` for cross-validation: block `k`
            of `n` contiguous blocks of the training samples is the
            validation split and the rest the train split (replaces
            `validation_fraction`; the test split is unchanged).

    Returns:
        `(images, labels)`: images (N, 8, 8, 1), labels (N,) int32 in 0..9.

    Example:
    >>> images, labels = load_digits("test")
    >>> images.shape, images.dtype.name, labels.shape, int(images.max())
    ((359, 8, 8, 1), 'uint8', (359,), 16)
    """
    check_choice("split", split, SPLITS)
    indices = digits_split_indices(validation_fraction, validation_fold)
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
