"""Training-time image augmentation for the classifier recipes.

Kinds:

- `"none"`: no augmentation.
- `"shift"`: the data pipeline's random crop of a zero-padded image (small
  translations; `build_datasets(augment=True)`).
- `"affine"`: random rotation, zoom and translation with Keras preprocessing
  layers (`RandomRotation`, `RandomZoom`, `RandomTranslation`), applied to
  whole batches inside the `tf.data` pipeline (Keras runs them with
  TensorFlow there, whatever the backend). Empty areas are filled with 0,
  the background of digits and of most preprocessed images.
- `"elastic"`: `"affine"` followed by a smooth random elastic distortion
  (Simard et al. 2003, the classic augmentation for handwriting): each image
  is resampled (bilinear, zero fill) through a displacement field that is a
  random `elastic_grid x elastic_grid` grid of control-point displacements
  (normal, standard deviation `elastic` times the image side) upsampled
  bilinearly to the image, so neighbouring pixels move together and strokes
  bend instead of breaking. (`keras.layers.RandomElasticTransform` is not
  used: it draws the same noise for both axes, and at the sizes here its
  smoothing kernel is a single pixel, so it jitters pixels independently.)
"""

from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

AUGMENTATIONS = ("none", "shift", "affine", "elastic")


def make_augmentation(kind="affine", rotation=12.0, zoom=0.1, translation=0.125,
                      horizontal_flip=False, seed=0, elastic=0.05, elastic_grid=4):
    """A function `(images, labels) -> (images, labels)` augmenting a batch
    inside a `tf.data` pipeline, or None when `kind` needs none (`"none"`,
    and `"shift"`, which the pipeline does itself).

    Args:
        kind: `"none"`, `"shift"`, `"affine"` or `"elastic"`.
        rotation: float >= 0, largest rotation in degrees.
        zoom: float in [0, 1), largest relative zoom in or out.
        translation: float in [0, 1), largest shift as a fraction of the side.
        horizontal_flip: bool, add random left-right flips (not for digits).
        seed: int >= 0.
        elastic: float in [0, 0.5), standard deviation of the elastic
            control-point displacements as a fraction of the image side
            (`"elastic"` only; 0.05 is about one pixel at 16x16).
        elastic_grid: int >= 2, control points per side of the elastic
            displacement grid: smaller is smoother.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> augment = make_augmentation("affine", seed=1)
    >>> ds = tf.data.Dataset.from_tensor_slices((np.ones((4, 8, 8, 1), "float32"),
    ...                                          np.zeros(4, "int32"))).batch(2).map(augment)
    >>> tuple(next(iter(ds))[0].shape)
    (2, 8, 8, 1)
    """
    kind = check_choice("augment", kind, AUGMENTATIONS)
    rotation = check_float("rotation", rotation, minimum=0.0)
    zoom = check_float("zoom", zoom, minimum=0.0)
    translation = check_float("translation", translation, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    elastic = check_float("elastic", elastic, minimum=0.0)
    elastic_grid = check_int("elastic_grid", elastic_grid, minimum=2)
    if elastic >= 0.5:
        raise ValueError(f"Argument `elastic` must be in [0, 0.5); received elastic={elastic}.")
    for name, value in (("zoom", zoom), ("translation", translation)):
        if value >= 1:
            raise ValueError(f"Argument `{name}` must be in [0, 1); received {name}={value}.")
    if kind not in ("affine", "elastic"):
        return None
    import keras

    layers = []
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rotation:
        layers.append(
            keras.layers.RandomRotation(rotation / 360.0, fill_mode="constant", seed=seed + 1)
        )
    if zoom:
        layers.append(
            keras.layers.RandomZoom((-zoom, zoom), fill_mode="constant", seed=seed + 2)
        )
    if translation:
        layers.append(
            keras.layers.RandomTranslation(
                translation, translation, fill_mode="constant", seed=seed + 3
            )
        )

    if kind == "elastic" and elastic:
        import tensorflow as tf

        generator = tf.random.Generator.from_seed(seed + 4)

        def distort(images):
            return elastic_distortion(images, generator.make_seeds(1)[:, 0], elastic, elastic_grid)

        layers.append(distort)

    def augment(images, labels):
        for layer in layers:
            images = layer(images)
        return images, labels

    return augment


def elastic_distortion(images, seed, strength, grid):
    """Resample a batch of images `(batch, height, width, channels)` through a
    smooth random displacement field (TensorFlow ops, for `tf.data`).

    The field is a `(grid, grid)` array of control-point displacements drawn
    from a normal distribution with standard deviation `strength` times the
    image side, upsampled bilinearly to the image; pixels are read with
    bilinear interpolation and are 0 outside the image.

    Args:
        images: float tensor `(batch, height, width, channels)`.
        seed: int tensor of shape `(2,)`, the stateless random seed.
        strength: float >= 0, displacement standard deviation / image side.
        grid: int >= 2, control points per side.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> images = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    >>> out = elastic_distortion(tf.constant(images), tf.constant([1, 2]), 0.05, 4)
    >>> tuple(out.shape)
    (2, 16, 16, 1)
    >>> bool(np.allclose(elastic_distortion(tf.constant(images), tf.constant([1, 2]), 0.0, 4), images))
    True
    """
    import tensorflow as tf

    strength = check_float("strength", strength, minimum=0.0)
    grid = check_int("grid", grid, minimum=2)
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side = tf.cast(tf.maximum(height, width), images.dtype)
    control = tf.random.stateless_normal(tf.stack([batch, grid, grid, 2]), seed, dtype=images.dtype)
    field = tf.image.resize(control * (strength * side), tf.stack([height, width]), method="bilinear")
    rows = tf.cast(tf.range(height), images.dtype)[:, None] + field[..., 0]
    cols = tf.cast(tf.range(width), images.dtype)[None, :] + field[..., 1]
    return _bilinear_sample(images, rows, cols)


def _bilinear_sample(images, rows, cols):
    """`images[b, rows[b, i, j], cols[b, i, j], :]` with bilinear
    interpolation; points outside the image read 0."""
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    row0, col0 = tf.floor(rows), tf.floor(cols)
    out = tf.zeros_like(images)
    for d_row in (0, 1):
        for d_col in (0, 1):
            r, c = row0 + d_row, col0 + d_col
            weight = (1 - tf.abs(rows - r)) * (1 - tf.abs(cols - c))
            inside = (r >= 0) & (r <= tf.cast(height - 1, r.dtype)) & (c >= 0) & (c <= tf.cast(width - 1, c.dtype))
            r_i = tf.clip_by_value(tf.cast(r, tf.int32), 0, height - 1)
            c_i = tf.clip_by_value(tf.cast(c, tf.int32), 0, width - 1)
            values = tf.gather_nd(images, tf.stack([r_i, c_i], axis=-1), batch_dims=1)
            out += values * tf.expand_dims(tf.where(inside, weight, tf.zeros_like(weight)), -1)
    return out
