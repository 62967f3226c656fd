"""UCI optdigits' training set: 3,823 real 8x8 digits by 30 other writers.

The embedded digits (`digits`) are the *test* set of the UCI "Optical
Recognition of Handwritten Digits" data (Alpaydin and Kaynak, 1998; 1,797
images by 13 writers). Its *training* set (optdigits.tra: 3,823 images by 30
different writers, made by the same NIST preprocessing: 32x32 bitmaps
counted in 4x4 blocks, values 0..16) ships beside it as
`optdigits_train.npz`, for pretraining on real handwriting of writers the
embedded digits never saw. No image in it equals an embedded digit (the file
is built without them by `tools/make_optdigits.py`).
The data is licensed CC BY 4.0 by its authors.

Splits, in UCI's order (neighbouring images tend to share a writer, so a
contiguous validation block holds out writers):

- train: the first `3823 - round(validation_fraction * 3823)` images;
- validation: the last `round(validation_fraction * 3823)` (default 382),
  when `validation_fraction > 0`;
- no test split: the embedded digits' test split is the test for models
  pretrained on this data.

Dataset spec: `"optdigits-train"`.
"""

import numpy as np

from keras_sparse_moe.data.digits import DIGITS_MAX_VALUE
from keras_sparse_moe.data.digits import read_packaged_digits
from keras_sparse_moe.data.splitting import check_fraction
from keras_sparse_moe.data.splitting import num_held_out
from keras_sparse_moe.utils.validation import check_choice

OPTDIGITS_TRAIN_COUNT = 3823
OPTDIGITS_SPLITS = ("train", "validation", "all")


def optdigits_split_ranges(validation_fraction=0.1):
    """`{split: (start, stop)}` of the optdigits training set's splits.

    Example:
    >>> optdigits_split_ranges(0.1)
    {'train': (0, 3441), 'validation': (3441, 3823), 'all': (0, 3823)}
    >>> optdigits_split_ranges(0)
    {'train': (0, 3823), 'all': (0, 3823)}
    """
    validation_fraction = check_fraction("validation_fraction", validation_fraction)
    train_stop = OPTDIGITS_TRAIN_COUNT - num_held_out(OPTDIGITS_TRAIN_COUNT, validation_fraction)
    ranges = {"train": (0, train_stop)}
    if train_stop < OPTDIGITS_TRAIN_COUNT:
        ranges["validation"] = (train_stop, OPTDIGITS_TRAIN_COUNT)
    ranges["all"] = (0, OPTDIGITS_TRAIN_COUNT)
    return ranges


def load_optdigits_train(split="train", validation_fraction=0.1, normalize=False):
    """Load a split of UCI optdigits' training set as NumPy arrays.

    Args:
        split: `"train"`, `"validation"` or `"all"` (no `"test"`: see the
            module docstring).
        validation_fraction: fraction in [0, 1) held out from the end as
            the validation split; 0 makes `"train"` all 3,823 images.
        normalize: False returns uint8 values 0..16; True float32 in [0, 1].

    Returns:
        `(images, labels)`: images (N, 8, 8, 1), labels (N,) int32 in 0..9.

    Example:
    >>> images, labels = load_optdigits_train("all")
    >>> images.shape, int(images.max()), np.bincount(labels).tolist()
    ((3823, 8, 8, 1), 16, [376, 389, 380, 389, 387, 376, 377, 387, 380, 382])
    """
    check_choice("split", split, OPTDIGITS_SPLITS)
    ranges = optdigits_split_ranges(validation_fraction)
    if split not in ranges:
        raise ValueError(
            "The optdigits-train 'validation' split is empty because validation_fraction=0; "
            "pass validation_fraction > 0 (e.g. 0.1) or use split='train'."
        )
    start, stop = ranges[split]
    images, labels = read_packaged_digits("optdigits_train.npz")
    images = images[start:stop, :, :, None]
    images = images.astype(np.float32) / DIGITS_MAX_VALUE if normalize else images.copy()
    return images, labels[start:stop].astype(np.int32)
