"""Regenerate the embedded `digits.npz` from scikit-learn (developers only).

scikit-learn is not a runtime dependency: the package ships the result. Run

    python tools/make_digits.py

to rewrite `keras_sparse_moe/data/digits.npz` (atomically). The file holds
`images` (1797, 8, 8) uint8 with values 0..16 and `labels` (1797,) uint8 with
values 0..9, in scikit-learn's order (`sklearn.datasets.load_digits()`, a copy
of the test set of the UCI "Optical Recognition of Handwritten Digits" data).
"""

import os
import sys
import tempfile

import numpy as np

DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras_sparse_moe", "data", "digits.npz")


def make_digits(path=DIGITS_PATH):
    """Write scikit-learn's digits to `path` as a compressed `.npz`."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.uint8)
    if images.shape != (1797, 8, 8) or not np.array_equal(images, bunch.images):
        raise RuntimeError("Unexpected scikit-learn digits: shape or values changed.")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        np.savez_compressed(tmp, images=images, labels=labels)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; package data must be world-readable
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


if __name__ == "__main__":
    out = make_digits(sys.argv[1] if len(sys.argv) > 1 else DIGITS_PATH)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
