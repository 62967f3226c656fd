"""What raw images an image converter expects, and the check of a batch
against it.

An image converter maps raw pixels to model inputs (`raw * scale + offset`,
after resizing). `RawImageInputMixin` adds to a keras-hub `ImageConverter`
subclass the declaration of the raw images it is made for:

- `value_range`: `(low, high)` of raw pixel values, e.g. `(0, 16)` for the
  embedded digits or `(0, 255)` for 8-bit images;
- `raw_image_shape`: `(height, width, channels)` of the raw images, e.g.
  `(8, 8, 1)` for the digits; the LiteRT export with preprocessing takes
  images of this shape by default.

`rescaled_to(value_range)` returns the scale and offset that map another raw
range onto the same model inputs, and `out_of_range_message(images)` is the
cheap host-side check the classifiers run once on `fit` / `evaluate` /
`predict` inputs.
"""

import sys
import weakref

import numpy as np


def check_value_range(value_range):
    """`value_range` as a `(low, high)` tuple of floats with low < high, or None.

    Example:
    >>> check_value_range([0, 255])
    (0.0, 255.0)
    """
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        low = high = None
    if low is None or not np.isfinite([low, high]).all() or not low < high:
        raise ValueError(
            "Argument `value_range` must be None or (low, high) with finite low < high, e.g. "
            f"(0, 255); received value_range={value_range!r}."
        )
    return (low, high)


def check_raw_image_shape(raw_image_shape, name="raw_image_shape"):
    """`raw_image_shape` as `(height, width, channels)` ints (channels 1 or
    3), or None; errors name the argument `name`.

    Example:
    >>> check_raw_image_shape([8, 8, 1])
    (8, 8, 1)
    """
    if raw_image_shape is None:
        return None
    shape = tuple(raw_image_shape) if isinstance(raw_image_shape, (list, tuple)) else ()
    if (
        len(shape) != 3
        or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
                   for d in shape)
        or shape[2] not in (1, 3)
    ):
        raise ValueError(
            f"Argument `{name}` must be None or (height, width, channels) of ints "
            f">= 1 with 1 or 3 channels, e.g. (8, 8, 1); received {raw_image_shape!r}."
        )
    return tuple(int(d) for d in shape)


def _per_channel(value, default):
    return np.atleast_1d(np.asarray(default if value is None else value, dtype="float64"))


def model_range(scale, offset, value_range):
    """`(low, high)` arrays (one value per channel, or one value) of the model
    inputs that the raw `value_range` maps to.

    Example:
    >>> [float(v[0]) for v in model_range(1 / 127.5, -1.0, (0, 255))]
    [-1.0, 1.0]
    """
    scale = _per_channel(scale, 1.0)
    offset = _per_channel(offset, 0.0)
    low, high = value_range
    return low * scale + offset, high * scale + offset


def _like(value, array):
    """`array` in the form of `value`: a float, or a tuple/list per channel."""
    if isinstance(value, (list, tuple)):
        return type(value)(float(v) for v in array)
    values = {float(v) for v in array}
    return float(array[0]) if len(values) == 1 else tuple(float(v) for v in array)


class RawImageInputMixin:
    """Adds `value_range` and `raw_image_shape` (see the module docstring)
    to a keras-hub `ImageConverter` subclass; put it first in the bases.

    Args:
        value_range: None (not declared) or `(low, high)` raw pixel values.
        raw_image_shape: None (the model's own image size) or
            `(height, width, channels)` of the raw images.
    """

    def __init__(self, *args, value_range=None, raw_image_shape=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.value_range = check_value_range(value_range)
        self.raw_image_shape = check_raw_image_shape(raw_image_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "value_range": None if self.value_range is None else list(self.value_range),
            "raw_image_shape": (None if self.raw_image_shape is None
                                else list(self.raw_image_shape)),
        })
        return config

    @property
    def model_value_range(self):
        """`(low, high)` of the model inputs for raw values in `value_range`
        (floats, averaged over channels), or None when undeclared."""
        if self.value_range is None:
            return None
        low, high = model_range(self.scale, self.offset, self.value_range)
        return float(np.mean(low)), float(np.mean(high))

    def rescaled_to(self, value_range):
        """`{"scale", "offset", "value_range"}` mapping raw values in
        `value_range` to the model inputs the current `value_range` maps
        to (the model's input range is kept). Needs a declared
        `value_range`."""
        value_range = check_value_range(value_range)
        if self.value_range is None:
            raise ValueError(
                f"{type(self).__name__} declares no `value_range`, so the raw range cannot be "
                "changed while keeping the model's input range; pass `scale` and `offset`."
            )
        low, high = model_range(self.scale, self.offset, self.value_range)
        scale = (high - low) / (value_range[1] - value_range[0])
        offset = low - value_range[0] * scale
        new_offset = None if self.offset is None and np.allclose(offset, 0.0) else offset
        return {
            "scale": _like(self.scale, scale),
            "offset": None if new_offset is None else _like(self.offset, new_offset),
            "value_range": value_range,
        }

    def describe_input(self):
        """One line on the raw images this converter expects.

        Example:
        >>> from keras_sparse_moe.models.moe_vit import MoEViTImageConverter
        >>> MoEViTImageConverter(image_size=(16, 16), scale=1 / 16, value_range=(0, 16),
        ...     raw_image_shape=(8, 8, 1)).describe_input()
        'raw 8x8x1 images with values 0..16 (resized to 16x16, then * 0.0625)'
        """
        shape = ("x".join(str(d) for d in self.raw_image_shape) + " images"
                 if self.raw_image_shape else "images")
        values = (f" with values {self.value_range[0]:g}..{self.value_range[1]:g}"
                  if self.value_range else "")
        steps = []
        if self.image_size is not None:
            steps.append(f"resized to {self.image_size[0]}x{self.image_size[1]}")
        arithmetic = " ".join(
            ([f"* {_short(self.scale)}"] if self.scale is not None else [])
            + ([f"+ {_short(self.offset)}"] if self.offset is not None else []))
        if arithmetic:
            steps.append(("then " if steps else "") + arithmetic)
        return f"raw {shape}{values}" + (f" ({', '.join(steps)})" if steps else "")

    def out_of_range_message(self, images):
        """None, or a sentence saying that the batch `images` (any array or
        tensor) is clearly outside `value_range`: values beyond it by more
        than half its width, or (for ranges wider than 10) a non-constant
        batch using only its lowest tenth, as `[0, 1]` floats given to a
        model for 0..255 pixels."""
        if self.value_range is None:
            return None
        low_value, high_value = _min_max(images)
        if low_value is None:
            return None
        low, high = self.value_range
        span = high - low
        too_wide = high_value > high + span / 2 or low_value < low - span / 2
        too_narrow = span > 10 and low_value < high_value <= low + span / 10
        if not (too_wide or too_narrow):
            return None
        return (
            f"The images have values in [{low_value:g}, {high_value:g}], but this model's image "
            f"converter expects raw values in [{low:g}, {high:g}] (it computes "
            f"raw * {_short(self.scale)} + {_short(self.offset or 0)}); predictions on them are "
            "meaningless. Rescale the images, or rebuild the model with "
            "from_preset(..., value_range=(low, high)) for images in another range."
        )


def _short(value):
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(v):.4g}" for v in value) + "]"
    return f"{float(value):.4g}"


def _min_max(images):
    """Smallest and largest value of an array or tensor, as floats (None,
    None for anything else: datasets, dicts, empty arrays)."""
    if isinstance(images, (list, tuple)):
        try:
            images = np.asarray(images, dtype="float32")
        except (TypeError, ValueError):
            return None, None
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        return None, None
    if isinstance(images, np.ndarray):
        if images.size == 0 or images.dtype.kind not in "uif":
            return None, None
        return float(np.min(images)), float(np.max(images))
    from keras import ops

    try:
        if int(np.prod(tuple(images.shape))) == 0:
            return None, None
        return (float(ops.convert_to_numpy(ops.min(images))),
                float(ops.convert_to_numpy(ops.max(images))))
    except Exception:  # noqa: BLE001 - symbolic or non-numeric: nothing to check
        return None, None


def _first_batch_images(x):
    """`x`, or for a `tf.data.Dataset` the images of its first element (the
    first of an `(x, y)` tuple, or its `"images"`); None when there are none
    to read."""
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset means it is imported
    if tf is None or not isinstance(x, tf.data.Dataset):
        return x
    try:
        element = next(iter(x.take(1)))
    except Exception:  # noqa: BLE001 - an empty or failing pipeline: fit reports it
        return None
    if isinstance(element, tuple):
        element = element[0] if element else None
    if isinstance(element, dict):
        element = element.get("images")
    return element


class InputRangeCheckMixin:
    """For keras-hub image tasks: `fit`, `evaluate` and `predict` warn once
    per model when their `x` (an array, a tensor, or the first batch of a
    `tf.data.Dataset`) is clearly outside the `value_range` of the
    preprocessor's image converter. A dataset's first batch is read (its
    pipeline run for that batch once more) the first time the model sees the
    dataset only, not again on each later call with it (`evaluate` or
    `predict` in a loop). The `validation_data` that `fit` has preprocessed
    is not checked. Put it before the keras-hub base class."""

    def _warn_if_out_of_range(self, x):
        if getattr(self, "_input_range_warned", False):
            return
        converter = getattr(getattr(self, "preprocessor", None), "image_converter", None)
        check = getattr(converter, "out_of_range_message", None)
        if check is None or self._dataset_seen_before(x):
            return
        message = check(_first_batch_images(x))
        if message:
            import warnings

            self._input_range_warned = True
            warnings.warn(message, UserWarning, stacklevel=3)

    def _dataset_seen_before(self, x):
        """Whether `x` is a `tf.data.Dataset` this model has checked already
        (held weakly; outside Keras's attribute tracking)."""
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(x, tf.data.Dataset):
            return False
        seen = self.__dict__.get("_range_checked_datasets")
        if seen is None:
            seen = weakref.WeakSet()
            object.__setattr__(self, "_range_checked_datasets", seen)
        if x in seen:
            return True
        seen.add(x)
        return False

    def fit(self, x=None, *args, **kwargs):
        self._warn_if_out_of_range(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        # Within `fit`, Keras evaluates `validation_data` that `fit` has
        # already preprocessed: nothing raw to check.
        if not kwargs.get("_use_cached_eval_dataset", False):
            self._warn_if_out_of_range(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._warn_if_out_of_range(x)
        return super().predict(x, *args, **kwargs)
