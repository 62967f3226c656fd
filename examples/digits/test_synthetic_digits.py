"""Synthetic digits: the embedded digits' format, determinism, the NIST-like
normalisation, that they look enough like real handwriting to read it, and
clear errors. Not part of the package's test suite; run with

    python -m pytest -p no:cacheprovider examples/digits
"""

import numpy as np
import pytest

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from digit_strokes import digit_strokes  # noqa: E402
from keras_sparse_moe.data import load_digits  # noqa: E402
from synthetic_digits import bilinear_sample  # noqa: E402
from synthetic_digits import load_synthetic_digits  # noqa: E402
from synthetic_digits import make_synthetic_digits  # noqa: E402
from synthetic_digits import smooth_field  # noqa: E402
from synthetic_digits import synthetic_digits_counts  # noqa: E402
from synthetic_digits import to_optdigits  # noqa: E402


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_digits(1000, seed=3)


def test_format_matches_the_embedded_digits(synthetic):
    images, labels = synthetic
    real, _ = load_digits("train", validation_fraction=0.0)
    assert images.shape == (1000, 8, 8, 1) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert images.max() <= 16 and images.min() == 0
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10
    for x in (images[..., 0], real[..., 0]):
        ink = x > 0
        assert (ink.any(2).sum(1) == 8).mean() > 0.95  # spans all eight rows, as NIST normalised
        assert ink[:, :, 0].any(1).mean() < 0.1  # the left column stays (nearly) empty
        assert abs(x.sum((1, 2)).mean() - 310) < 30  # about 30% of the 32x32 bitmap is ink
        widths = ink.any(1).sum(1)
        assert 5.0 <= widths.mean() <= 6.2


def test_same_seed_same_images_other_seed_other_images(synthetic):
    images, labels = synthetic
    again, again_labels = make_synthetic_digits(1000, seed=3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = make_synthetic_digits(50, seed=4)
    assert not any((other[i] == images[j]).all() for i in range(5) for j in range(1000))


def test_strokes_and_fonts_alone(synthetic):
    for share in (0.0, 1.0):
        images, labels = make_synthetic_digits(30, seed=1, stroke_share=share)
        assert images.shape == (30, 8, 8, 1) and sorted(set(labels.tolist())) == list(range(10))
        assert (images.reshape(30, -1).sum(1) > 150).all()


def test_synthetic_digits_read_real_handwriting():
    """A 3-nearest-neighbour rule fitted on synthetic digits only reads most
    of the real training digits (chance: 10%)."""
    images, labels = make_synthetic_digits(2000, seed=0)
    real, real_labels = load_digits("train", validation_fraction=0.0)
    a = images.reshape(len(images), -1).astype(np.float32)
    b = real.reshape(len(real), -1).astype(np.float32)
    distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
    nearest = np.argsort(distances, axis=1)[:, :3]
    votes = np.stack([np.bincount(row, minlength=10) for row in labels[nearest]])
    accuracy = float((votes.argmax(1) == real_labels).mean())
    assert accuracy > 0.7, accuracy


def test_to_optdigits_normalises_size_and_ink():
    rng = np.random.default_rng(0)
    assert to_optdigits(np.zeros((64, 64)), rng) is None
    yy, xx = np.mgrid[0:100, 0:100]
    radius = np.hypot((yy - 30) / 10, (xx - 60) / 7)
    ring = ((radius > 0.8) & (radius < 1.0)).astype(float)  # a small thin 0 off centre ...
    image = to_optdigits(ring, rng)
    assert image.shape == (8, 8) and image.dtype == np.uint8
    assert image[0].any() and image[-1].any()  # ... is stretched to the full height
    assert not image[:, 0].any()  # and centred
    assert 200 < image.sum() < 420  # and its strokes thickened to about 30% ink
    assert image[3:5, 3:5].sum() < image.sum() / 10  # the hole stays open
    solid = np.zeros((50, 50))
    solid[10:40, 15:35] = 1.0  # more ink than the target: kept, not erased
    assert to_optdigits(solid, rng).sum() > 300


def test_bilinear_sample_matches_a_loop_reference():
    rng = np.random.default_rng(1)
    image = rng.random((5, 6))
    ys, xs = rng.uniform(-1, 6, 40), rng.uniform(-1, 7, 40)

    def reference(y, x):
        total = 0.0
        for yy, wy in ((np.floor(y), 1 - (y - np.floor(y))), (np.floor(y) + 1, y - np.floor(y))):
            for xx, wx in ((np.floor(x), 1 - (x - np.floor(x))), (np.floor(x) + 1, x - np.floor(x))):
                if 0 <= yy < 5 and 0 <= xx < 6:
                    total += wy * wx * image[int(yy), int(xx)]
        return total

    np.testing.assert_allclose(bilinear_sample(image, ys, xs), [reference(y, x) for y, x in zip(ys, xs)], atol=1e-12)


def test_smooth_field_is_smooth_and_has_the_requested_scale():
    field = smooth_field(np.random.default_rng(2), 128, 4, 3.0)
    assert field.shape == (2, 128, 128)
    step = np.abs(np.diff(field, axis=2)).mean()
    assert step < 0.1 * np.abs(field).mean()  # neighbours move together
    assert 1.0 < field.std() < 4.0


def test_digit_strokes_cover_every_digit_and_reject_bad_input():
    rng = np.random.default_rng(0)
    for digit in range(10):
        strokes = digit_strokes(digit, rng)
        points = np.concatenate([np.asarray(s) for s in strokes])
        assert points.shape[1] == 2 and -0.3 < points.min() and points.max() < 1.3
    with pytest.raises(ValueError, match="`digit` must be an int in 0..9; received 10"):
        digit_strokes(10, rng)
    with pytest.raises(ValueError, match="`jitter`"):
        digit_strokes(3, rng, jitter=-1)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="`count` must be an int >= 1; received 0"):
        make_synthetic_digits(0)
    with pytest.raises(ValueError, match="`seed` must be an int >= 0"):
        make_synthetic_digits(10, seed=-1)
    with pytest.raises(ValueError, match=r"`stroke_share` must be a number in \[0, 1\]; received 1.5"):
        make_synthetic_digits(10, stroke_share=1.5)
    with pytest.raises(ValueError, match="`split` must be one of"):
        load_synthetic_digits("all", 500)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"`glyph` must be a 2-D array .*received shape \(4, 4, 1\)"):
        to_optdigits(np.ones((4, 4, 1)), rng)
    with pytest.raises(ValueError, match="`grid` must be an int >= 2; received 1"):
        smooth_field(rng, 16, 1, 1.0)
    with pytest.raises(ValueError, match="`std` must be a number >= 0"):
        smooth_field(rng, 16, 4, -1.0)
    with pytest.raises(ValueError, match="`image` must be 2-D"):
        bilinear_sample(np.ones((3, 3, 1)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="of one shape"):
        bilinear_sample(np.ones((3, 3)), np.zeros(2), np.zeros(3))


def test_split_sizes_and_fixed_seeds():
    assert synthetic_digits_counts(50_000) == {"train": 50000, "validation": 2000, "test": 1000}
    assert synthetic_digits_counts(300, validation=False) == {"train": 300, "test": 10}
    test, labels = load_synthetic_digits("test", 300)
    np.testing.assert_array_equal(test, make_synthetic_digits(10, seed=2)[0])
    assert not test.flags.writeable and len(labels) == 10
