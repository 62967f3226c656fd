"""tf.data input pipelines for classifiers and image-text (dual encoder) models.

Keras accepts `tf.data.Dataset`s in `fit`/`evaluate`/`predict` on every
backend (TensorFlow, JAX, PyTorch), so these pipelines serve all three.

Per example, in order: decode (file sources) -> channel handling (drop alpha,
grayscale <-> RGB when `channels` is set) -> resize to `image_size` ->
[cache] -> training-only augmentation (random crop of a zero-padded image,
i.e. small shifts; optional horizontal flip) -> optional rescaling to [0, 1]
(divide by `max_value`) -> batch -> prefetch.

Randomness is deterministic for a given `seed`: the training shuffle uses the
seed, and augmentation / caption choice use stateless random ops driven by
`tf.data.Dataset.random(seed)`. Both change from epoch to epoch but repeat
exactly when the pipeline is rebuilt with the same seed.
"""

import numbers

import numpy as np

from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

DEFAULT_SHUFFLE_BUFFER = 10_000
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


def check_image_size(image_size, allow_none=True):
    """Normalise `image_size` (int or (height, width)) to a tuple or None.

    Example:
    >>> check_image_size(32), check_image_size((24, 32)), check_image_size(None)
    ((32, 32), (24, 32), None)
    """
    if image_size is None and allow_none:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in image_size)
    ):
        raise ValueError(
            "Argument `image_size` must be a positive int or a (height, width) pair of "
            f"positive ints{' or None' if allow_none else ''}; received image_size={image_size!r}."
        )
    return (int(image_size[0]), int(image_size[1]))


def _check_channels(channels):
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"Argument `channels` must be None (keep), 1 or 3; received channels={channels!r}.")
    return channels


def _default_max_value(dtype):
    import tensorflow as tf

    return 1.0 if tf.as_dtype(dtype).is_floating else 255.0


def _prepare_image(image, channels, image_size, interpolation):
    """Decoded image -> float32 (H, W, C) at `image_size`, raw value scale."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    if image.shape.rank != 3:
        raise ValueError(
            f"Each image must have shape (height, width) or (height, width, channels); got {image.shape}."
        )
    in_channels = image.shape[-1]
    if in_channels is None:
        raise ValueError("Images must have a known number of channels (1, 2, 3 or 4).")
    image = tf.cast(image, tf.float32)
    if in_channels in (2, 4):  # drop the alpha channel
        image = image[..., : in_channels - 1]
        in_channels -= 1
    if channels == 3 and in_channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 1 and in_channels == 3:
        image = tf.image.rgb_to_grayscale(image)
    if image_size is not None:
        if tuple(image.shape[:2]) != tuple(image_size):
            image = tf.image.resize(image, image_size, method=interpolation)
        image = tf.ensure_shape(image, (image_size[0], image_size[1], image.shape[-1]))
    return image


def _augment_image(image, seed, pad_fraction, horizontal_flip):
    import tensorflow as tf

    if pad_fraction > 0:
        shape = tf.shape(image)
        pad = tf.maximum(1, tf.cast(tf.round(pad_fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)), tf.int32))
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.ensure_shape(
            tf.image.stateless_random_crop(padded, shape, seed=seed), image.shape
        )
    if horizontal_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + tf.constant([0, 1], seed.dtype))
    return image


def _pipeline(
    ds,
    *,
    count,
    structure,
    image_size=None,
    batch_size=32,
    training=False,
    augment=True,
    horizontal_flip=False,
    pad_fraction=0.125,
    channels=None,
    rescale=True,
    max_value=None,
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
    cache=False,
    decode_fn=None,
    batch_map_fn=None,
    interpolation="bilinear",
):
    """`ds` yields dicts with "image" (raw or encoded), optional "label",
    optional "captions" (1-D strings). `structure`: "supervised" ->
    (images, labels); "images" -> images; "dict" -> dict of
    images/captions/labels. The keyword options and their defaults are those
    of `make_pipeline` (declared here only)."""
    import tensorflow as tf

    image_size = check_image_size(image_size)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    channels = _check_channels(channels)
    pad_fraction = check_float("pad_fraction", pad_fraction, minimum=0.0)
    if pad_fraction >= 0.5:
        raise ValueError(f"Argument `pad_fraction` must be in [0, 0.5); received pad_fraction={pad_fraction}.")
    seed = check_int("seed", seed, minimum=0)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    if shuffle_buffer is not None:
        shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, minimum=1)
    if batch_map_fn is not None and not callable(batch_map_fn):
        raise ValueError(f"Argument `batch_map_fn` must be callable or None; received {batch_map_fn!r}.")
    if decode_fn is not None and not callable(decode_fn):
        raise ValueError(f"Argument `decode_fn` must be callable or None; received {decode_fn!r}.")
    if count is None:
        cardinality = int(ds.cardinality())
        count = cardinality if cardinality >= 0 else None
    autotune = tf.data.AUTOTUNE

    def shuffle(d, cheap):
        buffer = shuffle_buffer
        if buffer is None:
            buffer = count if (cheap and count) else min(count or DEFAULT_SHUFFLE_BUFFER, DEFAULT_SHUFFLE_BUFFER)
        return d.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)

    if training and not cache:
        ds = shuffle(ds, cheap=decode_fn is not None)

    raw_dtype = {}

    def prepare(example):
        example = dict(example)
        image = example["image"]
        if decode_fn is not None:
            image = decode_fn(image)
        raw_dtype.setdefault("dtype", tf.convert_to_tensor(image).dtype)
        example["image"] = _prepare_image(image, channels, image_size, interpolation)
        return example

    ds = ds.map(prepare, num_parallel_calls=autotune)
    if max_value is None:
        max_value = _default_max_value(raw_dtype["dtype"])
    max_value = check_float("max_value", max_value, minimum=0.0, strict=True)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if training:
            ds = shuffle(ds, cheap=False)

    has_captions = "captions" in ds.element_spec
    random_pick = training and has_captions
    if training and (augment or random_pick):
        randoms = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)

        def randomize(example, r):
            example = dict(example)
            stateless_seed = tf.stack([r, tf.constant(0, tf.int64)])
            if augment:
                example["image"] = _augment_image(example["image"], stateless_seed, pad_fraction, horizontal_flip)
            if random_pick:
                captions = example["captions"]
                index = tf.random.stateless_uniform(
                    [], stateless_seed + tf.constant([0, 2], tf.int64), minval=0,
                    maxval=tf.shape(captions)[0], dtype=tf.int32,
                )
                example["captions"] = captions[index : index + 1]
            return example

        ds = tf.data.Dataset.zip((ds, randoms)).map(randomize, num_parallel_calls=autotune)

    def finish(example):
        image = example["image"]
        if rescale:
            image = image / max_value
        if structure == "images":
            return image
        if structure == "supervised":
            return image, tf.cast(example["label"], tf.int32)
        out = {"images": image, "captions": example["captions"][0]}
        if "label" in example:
            out["labels"] = tf.cast(example["label"], tf.int32)
        return out

    ds = ds.map(finish, num_parallel_calls=autotune)
    if drop_remainder is None:
        drop_remainder = bool(training and (count is None or count >= batch_size))
    ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder), num_parallel_calls=autotune)
    if batch_map_fn is not None:
        ds = ds.map(batch_map_fn, num_parallel_calls=autotune)
    return ds.prefetch(autotune)


PIPELINE_OPTIONS = (
    "image_size", "batch_size", "training", "augment", "horizontal_flip", "pad_fraction",
    "channels", "rescale", "max_value", "seed", "shuffle_buffer", "drop_remainder", "cache",
    "decode_fn", "batch_map_fn", "interpolation",
)
"""The keyword options of `make_pipeline` and `make_image_text_pipeline`."""


def _as_example_dataset(images, labels, what):
    """Arrays or a dataset -> (dataset of dicts, count, has_labels)."""
    import tensorflow as tf

    if isinstance(images, tf.data.Dataset):
        if labels is not None:
            raise ValueError(
                f"Argument `labels` must be None when `images` is a tf.data.Dataset (it "
                f"already yields (image, label) pairs); received labels of type {type(labels).__name__}."
            )
        spec = images.element_spec
        if isinstance(spec, dict):
            if "image" not in spec:
                raise ValueError(f"A dataset of dicts must have an 'image' key; its keys are {sorted(spec)}.")
            return images, None, "label" in spec
        if isinstance(spec, tuple):
            if len(spec) != 2:
                raise ValueError(f"The {what} dataset must yield (image, label) pairs; it yields {len(spec)}-tuples.")
            return images.map(lambda x, y: {"image": x, "label": y}), None, True
        return images.map(lambda x: {"image": x}), None, False
    try:
        images = np.asarray(images)
    except Exception as error:  # noqa: BLE001 - report the input, not numpy's internals
        raise ValueError(f"Argument `images` must be an array or a tf.data.Dataset; could not convert it: {error}") from None
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(
            "Argument `images` must be a non-empty array of shape (N, height, width) or "
            f"(N, height, width, channels); received shape {images.shape}."
        )
    if images.dtype.kind not in "uif":
        raise ValueError(f"Argument `images` must hold numbers; received dtype {images.dtype}.")
    example = {"image": images}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"Argument `labels` must be integers of shape ({images.shape[0]},) to match "
                f"`images`; received shape {labels.shape}, dtype {labels.dtype}."
            )
        example["label"] = labels.astype(np.int32)
    return tf.data.Dataset.from_tensor_slices(example), images.shape[0], labels is not None


def check_options(function, options, allowed):
    """Raise the `TypeError` Python gives for keyword arguments of
    `function` (its name) outside `allowed`."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{function}() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"its options are {', '.join(sorted(allowed))}."
        )


def make_pipeline(images, labels=None, *, count=None, **options):
    """Batched classification pipeline yielding `(images, labels)`.

    Args:
        images: array (N, H, W) or (N, H, W, C), or a `tf.data.Dataset`
            yielding `(image, label)` pairs, single images, or dicts with keys
            "image" and optionally "label".
        labels: int array (N,) when `images` is an array (None: the pipeline
            yields images only).
        image_size: int or (height, width) to resize to; None keeps the size
            (then all images must share one size).
        batch_size: int >= 1.
        training: shuffle, augment, and drop the last partial batch.
        augment: apply the augmentation when `training`.
        horizontal_flip: add random left-right flips to the augmentation (off
            by default: wrong for digits and text).
        pad_fraction: zero padding, as a fraction of the image side, before the
            random crop back to size (0.125: shifts of up to 4 pixels at 32x32;
            0 disables the crop).
        channels: None keeps the channels (alpha is dropped); 3 turns grayscale
            into RGB; 1 turns RGB into grayscale.
        rescale: divide by `max_value` to get values in [0, 1]; False keeps the
            raw scale for a model whose preprocessor rescales itself.
        max_value: largest raw value (digits: 16); None: 255 for integer
            images, 1 for floating ones.
        seed: int >= 0 for the shuffle and the augmentation.
        shuffle_buffer: None: the whole dataset when it fits (at most 10,000
            decoded images; all file names for file sources).
        drop_remainder: None: True when training (static batch shapes), unless
            the data is smaller than one batch.
        cache: cache the decoded, resized images (True: in memory; a string:
            a cache file prefix).
        decode_fn: optional function mapping each element's image (e.g. a file
            path) to a uint8 image tensor.
        batch_map_fn: optional function applied to each batch.
        interpolation: resize method (`tf.image.resize` names).
        count: number of examples if known (for datasets of unknown length).

    Returns:
        A `tf.data.Dataset` of `(float32 (B, h, w, c), int32 (B,))`, or of
        images only.

    Example:
    >>> from keras_sparse_moe.data import load_digits
    >>> x, y = load_digits("test")
    >>> ds = make_pipeline(x, y, image_size=16, batch_size=8, channels=3, max_value=16)
    >>> images, labels = next(iter(ds))
    >>> tuple(images.shape), labels.dtype.name, float(images.numpy().max()) <= 1.0
    ((8, 16, 16, 3), 'int32', True)
    """
    check_options("make_pipeline", options, PIPELINE_OPTIONS)
    ds, n, has_labels = _as_example_dataset(images, labels, "classification")
    structure = "supervised" if has_labels else "images"
    return _pipeline(ds, count=n if count is None else count, structure=structure, **options)


def _captions_tensor(captions, n):
    import tensorflow as tf

    if len(captions) != n:
        raise ValueError(f"Argument `captions` must hold one entry per image ({n}); received {len(captions)}.")
    rows = []
    for i, entry in enumerate(captions):
        row = [entry] if isinstance(entry, (str, bytes)) else list(entry)
        if not row or not all(isinstance(c, (str, bytes)) for c in row):
            raise ValueError(
                f"Argument `captions` entry {i} must be a string or a non-empty list of strings; received {entry!r}."
            )
        rows.append(row)
    return tf.ragged.constant(rows, dtype=tf.string)


def make_image_text_pipeline(images, captions=None, labels=None, *, count=None, **options):
    """Batched image-text pipeline yielding dicts
    `{"images": float32 (B, h, w, c), "captions": string (B,), "labels": int32 (B,)}`
    ("labels" only when known).

    Each image may have several captions: a training pipeline picks one at
    random (deterministically for a seed, anew each epoch); an evaluation
    pipeline always takes the first. Tokenise with `batch_map_fn` (e.g. a
    keras-hub tokenizer) or in the model's preprocessor.

    Args:
        images: array (N, H, W[, C]) with `captions`, or a `tf.data.Dataset` of
            dicts with "image", "captions" (1-D string tensor) and optionally
            "label".
        captions: when `images` is an array: per image a string or a non-empty
            list of strings.
        labels: optional int array (N,).
        **others: as in `make_pipeline`.

    Example:
    >>> import numpy as np
    >>> ds = make_image_text_pipeline(
    ...     np.zeros((4, 8, 8, 1), "uint8"), [["a zero", "the digit 0"]] * 4,
    ...     batch_size=2, image_size=8)
    >>> batch = next(iter(ds))
    >>> sorted(batch), batch["captions"].numpy().tolist()
    (['captions', 'images'], [b'a zero', b'a zero'])
    """
    import tensorflow as tf

    check_options("make_image_text_pipeline", options, PIPELINE_OPTIONS)
    if isinstance(images, tf.data.Dataset):
        if captions is not None or labels is not None:
            raise ValueError(
                "Arguments `captions` and `labels` must be None when `images` is a tf.data.Dataset "
                "(it yields dicts with 'image', 'captions' and optionally 'label')."
            )
        spec = images.element_spec
        if not isinstance(spec, dict) or "image" not in spec or "captions" not in spec:
            raise ValueError(
                "An image-text dataset must yield dicts with keys 'image' and 'captions'; "
                f"it yields {spec}."
            )
        ds, n = images, None
    else:
        if captions is None:
            raise ValueError("Argument `captions` is required when `images` is an array.")
        ds, n, _ = _as_example_dataset(images, labels, "image-text")
        ragged = _captions_tensor(captions, n)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(ragged))).map(
            lambda example, caps: {**example, "captions": caps}
        )
    return _pipeline(ds, count=n if count is None else count, structure="dict", **options)
