"""TensorFlow Datasets sources: `tfds:NAME` (any image classification or
image-caption dataset of the TFDS catalogue, or a registered local builder).

`NAME` is a TFDS name, optionally with config and version
(`"cifar10"`, `"coco_captions/2014"`, `"mnist:3.*.*"`). The image and label
features are detected from the builder's features (`supervised_keys` first,
then the `Image` and `ClassLabel` features; prefer the ones called "image" /
"label") unless `image_key` / `label_key` are given.

Splits: `train_split` (default "train"); the test split is `test_split`, else
the dataset's "test" split, else the last `test_fraction` of the training
split; the validation split is `validation_split`, else the dataset's
"validation" (or "val") split, else the last `validation_fraction` of what
remains of the training split. Carved splits use TFDS slicing
(`"train[:54000]"`, `"train[54000:]"`), so they are the same on every run.
"""

import contextlib
import logging
import sys

from keras_sparse_moe.data.splitting import num_held_out

logger = logging.getLogger("keras_sparse_moe.data")

# Image-text datasets whose caption feature is not found by the generic rule.
KNOWN_CAPTION_KEYS = {"coco_captions": ("captions", "text")}


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


# Retries of a failed download request. TFDS's own default (10, with
# exponential back-off) waits almost four minutes before it reports that there
# is no network; three retries still ride out a brief hiccup.
DOWNLOAD_RETRIES = 3


@contextlib.contextmanager
def _few_download_retries():
    """Cap TFDS's download retries at `DOWNLOAD_RETRIES` inside the block."""
    from tensorflow_datasets.core.download import downloader

    saved = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = min(saved, DOWNLOAD_RETRIES)
    try:
        yield
    finally:
        downloader.MAX_RETRIES = saved


def get_builder(name, data_dir=None, download=True):
    """The TFDS builder of `name`, prepared (downloaded) when needed."""
    import difflib

    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False), n=3)
        hint = f" Did you mean {', '.join(repr('tfds:' + c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown TensorFlow Datasets dataset {name!r} (spec 'tfds:{name}').{hint} "
            "See https://www.tensorflow.org/datasets/catalog for the names."
        ) from None
    if not builder.is_prepared():
        if not download:
            raise ValueError(
                f"TFDS dataset {name!r} is not prepared in data_dir={builder.data_dir!r}; allow "
                "the download (download=True; on the command line, leave out --no-download), "
                f"or prepare it beforehand with `tfds build {name} --data_dir DIR`."
            )
        logger.info("tfds:%s: not prepared in %s: downloading and preparing it (this may take a while) ...", name, builder.data_dir)
        try:
            # TFDS prints its progress ("Downloading and preparing ...") on
            # stdout; progress belongs on stderr, beside the log and the bars.
            with contextlib.redirect_stdout(sys.stderr), _few_download_retries():
                builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - report what failed in our terms
            raise RuntimeError(
                f"Could not download and prepare TFDS dataset {name!r} into {builder.data_dir!r}: "
                f"{type(error).__name__}: {error}. Prepare it on a machine with network access "
                f"(`tfds build {name} --data_dir DIR`) and pass that directory as data_dir."
            ) from error
    return builder


def _features_of_type(features, cls):
    return [key for key, feature in features.items() if isinstance(feature, cls)]


def _pick(candidates, preferred):
    if preferred in candidates:
        return preferred
    return candidates[0] if candidates else None


def detect_image_label_keys(builder, image_key=None, label_key=None, require_label=True):
    """(image_key, label_key or None) of a builder's examples."""
    tfds = _tfds()
    features = builder.info.features
    name = builder.info.name
    keys = sorted(features.keys())
    supervised = builder.info.supervised_keys
    if (
        isinstance(supervised, tuple)
        and len(supervised) == 2
        and all(isinstance(k, str) for k in supervised)
        and isinstance(features[supervised[0]], tfds.features.Image)
        and isinstance(features[supervised[1]], tfds.features.ClassLabel)
    ):
        image_key = image_key or supervised[0]
        label_key = label_key or supervised[1]
    image_key = image_key or _pick(_features_of_type(features, tfds.features.Image), "image")
    if image_key is None or image_key not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has no image feature{'' if image_key is None else ' ' + repr(image_key)}; "
            f"its features are {keys}. Pass image_key=... naming an Image feature."
        )
    if not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(f"Feature {image_key!r} of TFDS dataset {name!r} is a {type(features[image_key]).__name__}, not an Image.")
    label_key = label_key or _pick(_features_of_type(features, tfds.features.ClassLabel), "label")
    if label_key is not None and label_key not in features:
        raise ValueError(f"TFDS dataset {name!r} has no feature {label_key!r}; its features are {keys}.")
    if label_key is not None and not isinstance(features[label_key], tfds.features.ClassLabel):
        raise ValueError(
            f"Feature {label_key!r} of TFDS dataset {name!r} is a {type(features[label_key]).__name__}, "
            "not a ClassLabel: a classifier needs integer class labels."
        )
    if label_key is None and require_label:
        raise ValueError(
            f"TFDS dataset {name!r} has no class labels (no ClassLabel feature among {keys}), so it "
            "cannot train a classifier. Use it for image-text pairs if it has captions, or pick "
            "a labelled dataset."
        )
    return image_key, label_key


def _is_text_feature(feature):
    tfds = _tfds()
    if isinstance(feature, tfds.features.Text):
        return True
    if isinstance(feature, tfds.features.Tensor):  # e.g. coco_captions' captions/text
        import tensorflow as tf

        return getattr(feature, "tf_dtype", None) == tf.string
    return False


def _flatten_text_features(features, prefix=()):
    """Paths (tuples of keys) of the string features, looking inside Sequences."""
    tfds = _tfds()
    paths = []
    for key, feature in features.items():
        inner = feature.feature if isinstance(feature, tfds.features.Sequence) else feature
        if _is_text_feature(inner):
            paths.append(prefix + (key,))
        elif isinstance(inner, tfds.features.FeaturesDict):
            paths.extend(_flatten_text_features(inner, prefix + (key,)))
    return paths


def detect_caption_key(builder, caption_key=None):
    """Path (tuple of keys) of the caption text feature, or None."""
    features = builder.info.features
    paths = _flatten_text_features(features)
    if caption_key is not None:
        if isinstance(caption_key, str):
            candidates = [(caption_key,), tuple(caption_key.split("/"))]
        else:
            candidates = [tuple(caption_key)]
        for candidate in candidates:
            if candidate in paths:
                return candidate
        raise ValueError(
            f"TFDS dataset {builder.info.name!r} has no text feature {caption_key!r}; its text features "
            f"are {['/'.join(p) for p in paths]}."
        )
    known = KNOWN_CAPTION_KEYS.get(builder.info.name)
    if known in paths:
        return known
    captioned = [p for p in paths if any("caption" in k.lower() for k in p)]
    return captioned[0] if captioned else None


def get_nested(example, path):
    for key in path:
        example = example[key]
    return example


def resolve_splits(builder, validation_fraction, test_fraction, train_split=None, validation_split=None, test_split=None):
    """Split strings of a builder: `(splits, counts, sources)`, dicts keyed by
    "train" / "validation" / "test" (absent keys: no such split).

    Held-out parts are carved from the end of the training split (test first,
    then validation), by example counts when the split sizes are known, else
    by whole percentages.
    """
    available = set(builder.info.splits.keys())
    known = bool(available)  # unknown (e.g. mocked in tests): assume "train"/"test"
    name = builder.info.name
    train_split = train_split or "train"
    base = train_split.split("[")[0]
    if known and base not in available:
        raise ValueError(
            f"TFDS dataset {name!r} has no split {base!r}; its splits are {sorted(available)}. "
            "Pass train_split=... ."
        )

    def count_of(split):
        try:
            return int(builder.info.splits[split].num_examples) if known else None
        except (KeyError, ValueError, TypeError, AssertionError):
            return None

    sliceable = "[" not in train_split
    n = count_of(train_split) if sliceable else None
    state = {"stop": n, "percent": 100}

    def carve(fraction):
        if not sliceable or fraction <= 0:
            return None
        if n is not None:
            k = num_held_out(state["stop"], fraction)
            if k == 0:
                return None
            state["stop"] -= k
            return f"{base}[{state['stop']}:{state['stop'] + k}]"
        k = max(1, int(round(fraction * state["percent"])))
        state["percent"] -= k
        return f"{base}[{state['percent']}%:{state['percent'] + k}%]"

    splits, sources = {}, {}
    if test_split is not None:
        splits["test"], sources["test"] = test_split, "given"
    elif not known or "test" in available:
        splits["test"], sources["test"] = "test", "the dataset's test split"
    else:
        carved = carve(test_fraction)
        if carved:
            splits["test"], sources["test"] = carved, f"last {test_fraction:.0%} of {base!r}"
    if validation_split is not None:
        splits["validation"], sources["validation"] = validation_split, "given"
    else:
        existing = [c for c in ("validation", "val") if c in available]
        if existing:
            splits["validation"], sources["validation"] = existing[0], f"the dataset's {existing[0]} split"
        else:
            carved = carve(validation_fraction)
            if carved:
                splits["validation"] = carved
                sources["validation"] = f"last {validation_fraction:.0%} of the rest of {base!r}"
    if n is not None and state["stop"] != n:
        train_split = f"{base}[:{state['stop']}]"
    elif n is None and state["percent"] != 100:
        train_split = f"{base}[:{state['percent']}%]"
    splits["train"], sources["train"] = train_split, "the training split"
    order = ("train", "validation", "test")
    splits = {k: splits[k] for k in order if k in splits}
    sources = {k: sources[k] for k in order if k in sources}
    counts = {k: count_of(v) for k, v in splits.items()}
    return splits, counts, sources
