"""Training augmentation of the classifier recipes: the affine and elastic
kinds inside a `tf.data` pipeline, the elastic warp against a NumPy
reference, and bad arguments."""

import numpy as np
import pytest
import tensorflow as tf

from keras_sparse_moe.recipes.augment import _bilinear_sample
from keras_sparse_moe.recipes.augment import elastic_distortion
from keras_sparse_moe.recipes.augment import make_augmentation


def _reference_sample(images, rows, cols):
    """Bilinear read of `images[b, rows, cols]`, 0 outside: loops, NumPy."""
    batch, height, width, channels = images.shape
    out = np.zeros_like(images)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                r, c = rows[b, i, j], cols[b, i, j]
                r0, c0 = int(np.floor(r)), int(np.floor(c))
                for rr in (r0, r0 + 1):
                    for cc in (c0, c0 + 1):
                        if 0 <= rr < height and 0 <= cc < width:
                            weight = (1 - abs(r - rr)) * (1 - abs(c - cc))
                            out[b, i, j] += weight * images[b, rr, cc]
    return out


def _digits16(count=8):
    from keras_sparse_moe.data import load_digits

    images, labels = load_digits("train")
    return tf.image.resize(images[:count].astype("float32"), (16, 16)).numpy(), labels[:count]


def test_bilinear_sample_matches_numpy_reference():
    rng = np.random.default_rng(0)
    images = rng.random((2, 6, 5, 3)).astype("float32")
    grid_rows, grid_cols = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    rows = (grid_rows + rng.normal(0, 1.5, (2, 6, 5))).astype("float32")
    cols = (grid_cols + rng.normal(0, 1.5, (2, 6, 5))).astype("float32")
    got = _bilinear_sample(tf.constant(images), tf.constant(rows), tf.constant(cols)).numpy()
    np.testing.assert_allclose(got, _reference_sample(images, rows, cols), atol=1e-5)


def test_whole_pixel_shift_moves_the_image_and_fills_zeros():
    images = np.arange(2 * 4 * 4, dtype="float32").reshape(2, 4, 4, 1) + 1
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    rows = np.broadcast_to(rows + 1, (2, 4, 4)).astype("float32")  # read one row below
    cols = np.broadcast_to(cols, (2, 4, 4)).astype("float32")
    got = _bilinear_sample(tf.constant(images), tf.constant(rows), tf.constant(cols)).numpy()
    np.testing.assert_array_equal(got[:, :3], images[:, 1:])
    np.testing.assert_array_equal(got[:, 3], 0)


def test_elastic_distortion_is_smooth_seeded_and_keeps_the_digit():
    images, _ = _digits16()
    seed = tf.constant([3, 4])
    a = elastic_distortion(tf.constant(images), seed, 0.05, 4).numpy()
    b = elastic_distortion(tf.constant(images), seed, 0.05, 4).numpy()
    c = elastic_distortion(tf.constant(images), tf.constant([5, 6]), 0.05, 4).numpy()
    np.testing.assert_array_equal(a, b)  # a stateless seed repeats exactly
    assert not np.allclose(a, c)
    assert not np.allclose(a, images)
    # The identity field leaves the images unchanged.
    np.testing.assert_allclose(
        elastic_distortion(tf.constant(images), seed, 0.0, 4).numpy(), images, atol=1e-5)
    # Strokes bend, they do not break or vanish: ink is roughly conserved and
    # the distorted image stays much closer to its digit than to another one.
    ink = images.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(a.sum(axis=(1, 2, 3)), ink, rtol=0.25)
    own = np.abs(a - images).mean(axis=(1, 2, 3))
    other = np.abs(a - np.roll(images, 1, axis=0)).mean(axis=(1, 2, 3))
    assert np.all(own < other)


def test_elastic_field_is_smooth_not_pixel_noise():
    # Warp a coordinate ramp: the read position of each pixel is the image
    # value, so the displacement field can be read back.
    ramp = np.broadcast_to(np.arange(16, dtype="float32")[None, :, None, None],
                           (64, 16, 16, 1)).copy() + 100.0  # rows; no zero fill inside
    warped = elastic_distortion(tf.constant(ramp), tf.constant([1, 1]), 0.05, 4).numpy()[..., 0]
    displacement = warped - ramp[..., 0]
    interior = displacement[:, 2:-2, 2:-2]
    # About 0.05 * 16 = 0.8 pixels at the control points (less between them).
    assert 0.3 < np.abs(interior).mean() < 1.0
    # Neighbouring pixels move together: the step between them is well below
    # the displacement itself (about 0.4 of it here; independent per-pixel
    # noise would give sqrt(2) = 1.41 times it).
    step = np.abs(np.diff(interior, axis=2)).mean()
    assert step < 0.6 * np.abs(interior).mean()


def test_elastic_augmentation_in_a_tf_data_pipeline():
    images, labels = _digits16()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    affine = make_augmentation("affine", seed=1)
    elastic = make_augmentation("elastic", seed=1)
    batches = list(dataset.map(elastic, num_parallel_calls=tf.data.AUTOTUNE))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 16, 16, 1), (4, 16, 16, 1)]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    first_affine = next(iter(dataset.map(affine)))[0].numpy()
    assert not np.allclose(batches[0][0].numpy(), first_affine)  # more than the affine part
    # Elastic alone (no affine) moves pixels by about a pixel, not more.
    only = make_augmentation("elastic", rotation=0, zoom=0, translation=0, seed=2)
    warped = next(iter(dataset.map(only)))[0].numpy()
    assert 0 < np.abs(warped - images[:4]).mean() < 0.5 * np.abs(images[:4]).mean()


@pytest.mark.parametrize("kind", ["none", "shift"])
def test_kinds_without_batch_augmentation_return_none(kind):
    assert make_augmentation(kind) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "warp"}, "augment"),
        ({"elastic": 0.5}, r"elastic.*\[0, 0.5\).*0.5"),
        ({"elastic": -0.1}, "elastic"),
        ({"elastic_grid": 1}, "elastic_grid"),
        ({"zoom": 1.0}, "zoom"),
    ],
)
def test_bad_arguments_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_augmentation(**kwargs)


@pytest.mark.parametrize("strength, grid, match", [(-0.1, 4, "strength"), (0.05, 1, "grid")])
def test_elastic_distortion_rejects_bad_arguments(strength, grid, match):
    with pytest.raises(ValueError, match=match):
        elastic_distortion(tf.zeros((1, 8, 8, 1)), tf.constant([0, 0]), strength, grid)
