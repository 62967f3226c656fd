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
"""

from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

AUGMENTATIONS = ("none", "shift", "affine")


def make_augmentation(kind="affine", rotation=12.0, zoom=0.1, translation=0.125,
                      horizontal_flip=False, seed=0):
    """A function `(images, labels) -> (images, labels)` augmenting a batch
    inside a `tf.data` pipeline, or None when `kind` needs none (`"none"`,
    and `"shift"`, which the pipeline does itself).

    Args:
        kind: `"none"`, `"shift"` or `"affine"`.
        rotation: float >= 0, largest rotation in degrees.
        zoom: float in [0, 1), largest relative zoom in or out.
        translation: float in [0, 1), largest shift as a fraction of the side.
        horizontal_flip: bool, add random left-right flips (not for digits).
        seed: int >= 0.

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
    for name, value in (("zoom", zoom), ("translation", translation)):
        if value >= 1:
            raise ValueError(f"Argument `{name}` must be in [0, 1); received {name}={value}.")
    if kind != "affine":
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

    def augment(images, labels):
        for layer in layers:
            images = layer(images)
        return images, labels

    return augment
