"""tf.data pipelines: shapes, dtypes, channels, rescaling, deterministic
shuffling and augmentation, image-text captions, bad input, and use in
`fit` on the current backend."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import make_image_text_pipeline
from keras_sparse_moe.data import make_pipeline


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits("test")
    return images[:40], labels[:40]


def _first_epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_shapes_dtypes_channels_and_rescale(digits):
    x, y = digits
    images, labels = next(iter(make_pipeline(x, y, image_size=16, batch_size=8, channels=3, max_value=16)))
    assert images.shape == (8, 16, 16, 3) and images.dtype.name == "float32"
    assert labels.shape == (8,) and labels.dtype.name == "int32"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    np.testing.assert_array_equal(labels.numpy(), y[:8])  # evaluation keeps the order
    raw, _ = next(iter(make_pipeline(x, y, batch_size=8, rescale=False)))
    np.testing.assert_array_equal(raw.numpy(), x[:8].astype("float32"))  # no resize, raw 0..16
    rgb = np.repeat(x[..., None, 0], 3, axis=-1).astype("uint8") * 15
    gray, _ = next(iter(make_pipeline(rgb, y, batch_size=4, channels=1)))
    assert gray.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(gray.numpy()[..., 0], rgb[:4, ..., 0] / 255.0, atol=1e-2)


def test_evaluation_keeps_last_partial_batch_training_drops_it(digits):
    x, y = digits
    assert [int(b[1].shape[0]) for b in make_pipeline(x, y, batch_size=16)] == [16, 16, 8]
    assert [int(b[1].shape[0]) for b in make_pipeline(x, y, batch_size=16, training=True)] == [16, 16]
    # Smaller than one batch: nothing to drop.
    assert [int(b[1].shape[0]) for b in make_pipeline(x[:5], y[:5], batch_size=16, training=True)] == [5]


def test_training_shuffle_and_augmentation_are_deterministic(digits):
    x, y = digits
    kwargs = dict(image_size=8, batch_size=8, training=True, max_value=16)
    a = make_pipeline(x, y, seed=3, **kwargs)
    first_a, labels_a = _first_epoch(a)
    first_b, labels_b = _first_epoch(make_pipeline(x, y, seed=3, **kwargs))
    np.testing.assert_array_equal(first_a, first_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    other, _ = _first_epoch(make_pipeline(x, y, seed=4, **kwargs))
    assert not np.array_equal(first_a, other)
    second_a, labels_second = _first_epoch(a)  # a new epoch: new order and shifts
    assert not np.array_equal(labels_a, labels_second)
    assert sorted(labels_a.tolist()) == sorted(y.tolist())  # a permutation of the data


def test_augmentation_shifts_without_changing_content(digits):
    x, y = digits
    kwargs = dict(batch_size=40, training=True, max_value=16, seed=0, pad_fraction=0.25)
    plain, plain_labels = _first_epoch(make_pipeline(x, y, augment=False, **kwargs))
    shifted, shifted_labels = _first_epoch(make_pipeline(x, y, augment=True, **kwargs))
    np.testing.assert_array_equal(plain_labels, shifted_labels)  # same shuffle
    assert not np.array_equal(plain, shifted)
    # A shift only moves pixels within a zero border: total ink never grows.
    assert np.all(shifted.sum(axis=(1, 2, 3)) <= plain.sum(axis=(1, 2, 3)) + 1e-4)
    # Evaluation never augments.
    eval_a, _ = _first_epoch(make_pipeline(x, y, batch_size=40, max_value=16))
    np.testing.assert_array_equal(eval_a, x.astype("float32") / 16)


def test_horizontal_flip_is_optional():
    image = np.zeros((1, 4, 4, 1), "uint8")
    image[0, :, 0] = 255  # a bar on the left
    labels = np.zeros((1,), "int32")
    seen = set()
    for seed in range(8):
        batch, _ = next(iter(make_pipeline(image, labels, batch_size=1, training=True, pad_fraction=0.0,
                                           horizontal_flip=True, seed=seed)))
        seen.add(int(np.argmax(batch.numpy()[0, 0, :, 0])))
    assert seen == {0, 3}
    batch, _ = next(iter(make_pipeline(image, labels, batch_size=1, training=True, pad_fraction=0.0)))
    assert int(np.argmax(batch.numpy()[0, 0, :, 0])) == 0


def test_image_text_pipeline_picks_captions():
    images = np.zeros((6, 8, 8, 1), "uint8")
    captions = [[f"image {i} caption {j}" for j in range(3)] for i in range(6)]
    ds = make_image_text_pipeline(images, captions, labels=np.arange(6), batch_size=6)
    batch = next(iter(ds))
    assert sorted(batch) == ["captions", "images", "labels"]
    assert [c.decode() for c in batch["captions"].numpy()] == [f"image {i} caption 0" for i in range(6)]
    train = make_image_text_pipeline(images, captions, labels=np.arange(6), batch_size=6, training=True, seed=1)
    picked = set()
    for _ in range(4):
        batch = next(iter(train))
        for label, caption in zip(batch["labels"].numpy(), batch["captions"].numpy()):
            assert caption.decode().startswith(f"image {label} ")  # caption stays with its image
            picked.add(caption.decode().rsplit(" ", 1)[1])
    assert picked == {"0", "1", "2"}


def test_bad_inputs(digits):
    x, y = digits
    with pytest.raises(ValueError, match="image_size"):
        make_pipeline(x, y, image_size=(8,))
    with pytest.raises(ValueError, match="batch_size"):
        make_pipeline(x, y, batch_size=0)
    with pytest.raises(ValueError, match="channels"):
        make_pipeline(x, y, channels=2)
    with pytest.raises(ValueError, match="labels"):
        make_pipeline(x, y[:-1])
    with pytest.raises(ValueError, match="images"):
        make_pipeline(np.zeros((3,)), None)
    with pytest.raises(ValueError, match="pad_fraction"):
        make_pipeline(x, y, pad_fraction=0.6)
    with pytest.raises(ValueError, match="captions"):
        make_image_text_pipeline(x[:2], [["ok"], []])


def test_pipeline_trains_a_model_on_the_current_backend(digits):
    x, y = digits
    ds = make_pipeline(x, y, image_size=8, batch_size=8, training=True, max_value=16, channels=3)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert model.evaluate(make_pipeline(x, y, batch_size=16, max_value=16, channels=3), verbose=0) > 0
