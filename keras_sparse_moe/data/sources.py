"""Dataset specs and the functions that turn them into tf.data pipelines.

A dataset spec is one of:

- `"digits"`: the embedded scikit-learn digits (1,797 8x8 grayscale images,
  10 classes; the last 359 samples are the fixed test split);
- `"tfds:NAME"`: a TensorFlow Datasets image dataset (`"tfds:cifar10"`,
  `"tfds:coco_captions"`), with `data_dir` / `download` / split options;
- `"folder:PATH"`: your own images, one sub-folder per class (optionally
  inside `train/`, `validation/`, `test/`), plus `captions.tsv` for
  image-text pairs;
- `"optdigits-train"`: UCI optdigits' training set (3,823 real digits by 30
  writers who wrote none of the embedded digits; train and validation
  splits, no test split), for pretraining (`optdigits`).

Classification: `load_dataset` (one split, unbatched, raw uint8 images) and
`build_datasets` (train / validation / test pipelines plus a `DatasetInfo`).
Image-text pairs: `load_image_text_dataset` and `build_image_text_datasets`.
"""

import dataclasses
import difflib
import inspect
import logging
import os

import numpy as np

from keras_sparse_moe.data import digits as digits_lib
from keras_sparse_moe.data import image_folder
from keras_sparse_moe.data import optdigits as optdigits_lib
from keras_sparse_moe.data import tfds_source
from keras_sparse_moe.data.dataset_info import DatasetInfo
from keras_sparse_moe.data.pipeline import PIPELINE_OPTIONS
from keras_sparse_moe.data.pipeline import _pipeline
from keras_sparse_moe.data.pipeline import check_options
from keras_sparse_moe.data.pipeline import check_image_size
from keras_sparse_moe.data.prompts import DEFAULT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import DIGIT_CAPTION_TEMPLATES
from keras_sparse_moe.data.prompts import DIGIT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import digit_fields
from keras_sparse_moe.data.prompts import zero_shot_prompts
from keras_sparse_moe.data.splitting import SPLITS
from keras_sparse_moe.data.splitting import check_fraction
from keras_sparse_moe.utils.validation import check_choice

logger = logging.getLogger("keras_sparse_moe.data")

DEFAULT_TEST_FRACTION = 0.2
SPEC_FORMS = (
    "'digits' (the embedded scikit-learn handwritten digits), "
    "'tfds:NAME' (a TensorFlow Datasets image dataset, e.g. 'tfds:mnist' or 'tfds:coco_captions'), "
    "'folder:PATH' (your own images, one sub-folder per class), "
    "'optdigits-train' (UCI optdigits' training set: 3,823 real digits by other writers, for pretraining)"
)


def parse_spec(spec):
    """Split a dataset spec into `(kind, argument)`.

    Example:
    >>> parse_spec("digits"), parse_spec("tfds:cifar10"), parse_spec("folder:/data/pets")
    (('digits', None), ('tfds', 'cifar10'), ('folder', '/data/pets'))
    >>> parse_spec("optdigits-train")
    ('optdigits-train', None)
    """
    if not isinstance(spec, str):
        raise ValueError(
            f"A dataset spec must be a string; received {spec!r} of type {type(spec).__name__}. "
            f"Accepted forms: {SPEC_FORMS}."
        )
    text = spec.strip()
    if text.lower() in ("digits", "optdigits-train"):
        return text.lower(), None
    kind, sep, argument = text.partition(":")
    kind = kind.strip().lower()
    if sep and kind in ("tfds", "folder"):
        argument = argument.strip()
        if not argument:
            what = "a dataset name, e.g. 'tfds:mnist'" if kind == "tfds" else "a path, e.g. 'folder:./my_images'"
            raise ValueError(f"Dataset spec {spec!r} is missing {what}.")
        return kind, (os.path.expanduser(argument) if kind == "folder" else argument)
    hints = []
    if difflib.get_close_matches(text.lower(), ["optdigits-train"], n=1, cutoff=0.65):
        hints.append("'optdigits-train'")
    elif difflib.get_close_matches(text.lower(), ["digits"], n=1, cutoff=0.6):
        hints.append("'digits'")
    if os.path.isdir(os.path.expanduser(text)):
        hints.append(f"'folder:{text}'")
    elif not sep and text and "/" not in text:
        hints.append(f"'tfds:{text}'")
    hint = f" Did you mean {' or '.join(hints)}?" if hints else ""
    raise ValueError(f"Unknown dataset spec {spec!r}. Accepted forms: {SPEC_FORMS}.{hint}")


def _class_caption_table(class_names, templates, class_fields=None):
    import tensorflow as tf

    return tf.constant(zero_shot_prompts(class_names, templates, class_fields), tf.string)


class _Source:
    """A resolved dataset spec: `info` plus per-split example datasets.

    `examples(split, training, seed)` returns `(dataset of dicts with "image"
    and optional "label", count or None)`; `caption_examples(...)` the same
    with "captions" (1-D strings). Images still need `decode_fn` (file
    sources) when it is not None.
    """

    info = None
    decode_fn = None
    image_text = False
    options = {}

    def __repr__(self):
        # Messages name a source as its spec ("Dataset 'digits' has no ...").
        return repr(self.info.spec)

    def _check_split(self, split):
        check_choice("split", split, SPLITS)
        if split != "all" and split not in self.info.counts:
            raise ValueError(
                f"Dataset {self.info.spec!r} has no {split!r} split (with these options); its splits "
                f"are {sorted(self.info.counts)}."
            )

    def _split_names(self, split):
        """The splits `split` stands for (`"all"`: every split), checked."""
        self._check_split(split)
        return list(self.info.counts) if split == "all" else [split]

    def _concatenate(self, split, part):
        """`part(name)` -> `(dataset, count or None)` of each split that
        `split` stands for, concatenated in order."""
        parts = [part(name) for name in self._split_names(split)]
        ds = parts[0][0]
        for other, _ in parts[1:]:
            ds = ds.concatenate(other)
        counts = [count for _, count in parts]
        return ds, (None if None in counts else sum(counts))

    def examples(self, split, training=False, seed=0):
        return self._concatenate(split, lambda name: self._examples(name, training, seed))

    def caption_examples(self, split, training=False, seed=0):
        ds, count = self.examples(split, training, seed)
        return self._add_captions(ds), count

    def _add_captions(self, ds):
        templates = self.info.caption_templates
        if not self.info.class_names or not templates:
            raise ValueError(f"Dataset {self.info.spec!r} has neither captions nor class names to caption from.")
        import tensorflow as tf

        table = _class_caption_table(self.info.class_names, templates, self.info.class_fields)
        return ds.map(lambda ex: {**ex, "captions": tf.gather(table, ex["label"])})


def _describe_samples(indices):
    """"samples a..b" (or "samples a..b, c..d") of sorted sample indices."""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = [indices[0]] + [indices[i + 1] for i in breaks]
    stops = [indices[i] for i in breaks] + [indices[-1]]
    return "samples " + ", ".join(f"{a}..{b}" for a, b in zip(starts, stops))


def _digits_format_info(spec, source, counts, caption_templates, splits):
    """`DatasetInfo` of 8x8x1 digit images with values 0..16 and the digit
    prompts and captions."""
    return DatasetInfo(
        spec=spec,
        source=source,
        num_classes=10,
        class_names=digits_lib.DIGITS_CLASS_NAMES,
        counts=counts,
        image_shape=(8, 8, 1),
        max_value=digits_lib.DIGITS_MAX_VALUE,
        prompt_templates=DIGIT_PROMPT_TEMPLATES,
        caption_templates=tuple(caption_templates or DIGIT_CAPTION_TEMPLATES),
        class_fields=tuple(digit_fields(d) for d in range(10)),
        splits=splits,
    )


class _DigitsSource(_Source):
    def __init__(self, spec, validation_fraction, test_fraction, caption_templates=None):
        if test_fraction is not None and abs(test_fraction - DEFAULT_TEST_FRACTION) > 1e-9:
            raise ValueError(
                f"The digits test split is fixed (the last 20%: samples 1438..1796); received "
                f"test_fraction={test_fraction}. Leave test_fraction=None."
            )
        self.validation_fraction = validation_fraction
        indices = digits_lib.digits_split_indices(validation_fraction)
        counts = {k: len(v) for k, v in indices.items() if k != "all"}
        self.info = _digits_format_info(
            spec, "digits", counts, caption_templates,
            splits={k: _describe_samples(v) for k, v in indices.items() if k != "all"},
        )

    def _examples(self, split, training, seed):
        import tensorflow as tf

        images, labels = digits_lib.load_digits(split, self.validation_fraction)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}), len(labels)


class _OptdigitsSource(_Source):
    """UCI optdigits' training set (`optdigits`): train and validation
    splits in UCI's order, no test split."""

    def __init__(self, spec, validation_fraction, test_fraction, caption_templates=None):
        if test_fraction is not None:
            raise ValueError(
                f"{spec!r} has no test split (the embedded digits' test split is the test for models "
                f"pretrained on it); received test_fraction={test_fraction}. Leave test_fraction=None."
            )
        self.validation_fraction = validation_fraction
        ranges = optdigits_lib.optdigits_split_ranges(validation_fraction)
        self.info = _digits_format_info(
            spec, "optdigits-train", {k: b - a for k, (a, b) in ranges.items() if k != "all"},
            caption_templates,
            splits={k: f"samples {a}..{b - 1}" for k, (a, b) in ranges.items() if k != "all"},
        )

    def _examples(self, split, training, seed):
        import tensorflow as tf

        images, labels = optdigits_lib.load_optdigits_train(split, self.validation_fraction)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}), len(labels)


class _FolderSource(_Source):
    def __init__(self, spec, path, validation_fraction, test_fraction, check_images, image_text=False,
                 captions_file=None, caption_templates=None):
        root = image_folder._check_root(path)
        captioned = captions_file is not None or (
            image_text and os.path.isfile(os.path.join(root, image_folder.CAPTIONS_FILE))
        )
        if captioned:
            data = image_folder.scan_captioned_folder(root, captions_file, validation_fraction, test_fraction, check_images)
        else:
            data = image_folder.scan_image_folder(root, validation_fraction, test_fraction, check_images)
        self.data = data
        self.captioned = captioned
        self.decode_fn = image_folder.image_file_decoder(data.channels)
        self.info = DatasetInfo(
            spec=spec,
            source="folder",
            num_classes=len(data.class_names) if data.class_names else None,
            class_names=data.class_names,
            counts={k: len(v["paths"]) for k, v in data.splits.items()},
            image_shape=data.image_shape,
            max_value=255.0,
            prompt_templates=DEFAULT_PROMPT_TEMPLATES,
            caption_templates=None if captioned else tuple(caption_templates or DEFAULT_PROMPT_TEMPLATES),
            splits=data.sources,
        )

    def _examples(self, split, training, seed):
        import tensorflow as tf

        part = self.data.splits[split]
        example = {"image": np.asarray(part["paths"], dtype=object).astype(str)}
        if part["labels"] is not None:
            example["label"] = part["labels"]
        return tf.data.Dataset.from_tensor_slices(example), len(part["paths"])

    def caption_examples(self, split, training=False, seed=0):
        if not self.captioned:
            return super().caption_examples(split, training, seed)
        import tensorflow as tf

        paths, captions = [], []
        for name in self._split_names(split):
            paths.extend(self.data.splits[name]["paths"])
            captions.extend(self.data.splits[name]["captions"])
        ds = tf.data.Dataset.from_tensor_slices(
            {"image": np.asarray(paths, dtype=object).astype(str), "captions": tf.ragged.constant(captions, tf.string)}
        )
        return ds, len(paths)


class _TfdsSource(_Source):
    def __init__(self, spec, name, validation_fraction, test_fraction, data_dir=None, download=True, image_key=None,
                 label_key=None, train_split=None, validation_split=None, test_split=None, image_text=False,
                 caption_key=None, caption_templates=None):
        import tensorflow_datasets as tfds

        self.builder = tfds_source.get_builder(name, data_dir=data_dir, download=download)
        self.caption_key = tfds_source.detect_caption_key(self.builder, caption_key) if image_text else None
        self.image_key, self.label_key = tfds_source.detect_image_label_keys(
            self.builder, image_key, label_key, require_label=not image_text
        )
        if image_text and self.caption_key is None and self.label_key is None:
            text = ["/".join(p) for p in tfds_source._flatten_text_features(self.builder.info.features)]
            raise ValueError(
                f"TFDS dataset {name!r} has neither a caption feature nor class labels, so it cannot "
                f"give image-text pairs. Its text features are {text}: pass caption_key=... ."
            )
        self.splits, counts, sources = tfds_source.resolve_splits(
            self.builder, validation_fraction, DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction,
            train_split, validation_split, test_split,
        )
        feature = self.builder.info.features[self.image_key]
        dtype = np.dtype(getattr(feature, "np_dtype", np.uint8))
        max_value = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        class_names = None
        if self.label_key is not None:
            class_names = tuple(self.builder.info.features[self.label_key].names)
        self.info = DatasetInfo(
            spec=spec,
            source="tfds",
            num_classes=len(class_names) if class_names else None,
            class_names=class_names,
            counts=counts,
            image_shape=tuple(feature.shape),
            max_value=max_value,
            prompt_templates=DEFAULT_PROMPT_TEMPLATES,
            caption_templates=None if self.caption_key else tuple(caption_templates or DEFAULT_PROMPT_TEMPLATES),
            splits={k: f"{v!r} ({sources[k]})" for k, v in self.splits.items()},
        )
        self._tfds = tfds

    def _dataset(self, split, training, seed):
        read_config = self._tfds.ReadConfig(shuffle_seed=seed)
        return self.builder.as_dataset(split=self.splits[split], shuffle_files=training, read_config=read_config)

    def _select(self, ex, captions=False):
        """A TFDS example -> dict with "image", optionally "captions" (1-D
        strings) and, with class labels, "label"."""
        out = {"image": ex[self.image_key]}
        if captions:
            import tensorflow as tf

            out["captions"] = tf.reshape(tfds_source.get_nested(ex, self.caption_key), [-1])
        if self.label_key is not None:
            out["label"] = ex[self.label_key]
        return out

    def _examples(self, split, training, seed):
        return self._dataset(split, training, seed).map(self._select), self.info.counts.get(split)

    def caption_examples(self, split, training=False, seed=0):
        if self.caption_key is None:
            return super().caption_examples(split, training, seed)
        import tensorflow as tf

        def part(name):
            ds = self._dataset(name, training, seed).map(lambda ex: self._select(ex, captions=True))
            return ds, self.info.counts.get(name)

        ds, count = self._concatenate(split, part)
        return ds.filter(lambda ex: tf.size(ex["captions"]) > 0), count


def _fmt(n):
    return "?" if n is None else f"{n:,}"


def _log_summary(info, image_text=False):
    """Log what the dataset holds (once per resolution: a command resolves
    its data once and passes the source on)."""
    split_text = " | ".join(f"{k} {_fmt(v)}" for k, v in info.counts.items())
    h, w, c = info.image_shape
    shape = f"{h}x{w}x{c}" if h else f"mixed sizes, {c} channel{'s' if c != 1 else ''}"
    classes = f"{info.num_classes} classes" if info.num_classes else "no class labels"
    kind = "image-text pairs" if image_text else "images"
    logger.info("%s", f"{info.spec}: {kind} ({shape}, {classes}): {split_text}")
    for split, source in info.splits.items():
        logger.info("%s", f"  {split}: {source}")


def _reuse_source(source, image_text, options):
    """A source already resolved, given again (with options, if any, that
    must be those it was resolved with)."""
    if image_text and not source.image_text:  # an image-text source also serves labelled images
        raise ValueError(
            f"Dataset {source.info.spec!r} was resolved for labelled images; image-text pairs "
            "need resolve_dataset(..., image_text=True)."
        )
    differ = sorted(k for k, v in options.items() if v != source.options.get(k))
    if differ:
        raise ValueError(
            f"Dataset {source.info.spec!r} was resolved with "
            f"{ {k: source.options.get(k) for k in differ} }; these options cannot change "
            f"afterwards (received { {k: options[k] for k in differ} }): resolve it again."
        )
    return source


def resolve_dataset(
    spec,
    *,
    validation_fraction=0.1,
    test_fraction=None,
    data_dir=None,
    download=True,
    image_key=None,
    label_key=None,
    train_split=None,
    validation_split=None,
    test_split=None,
    check_images=True,
    image_text=False,
    captions_file=None,
    caption_key=None,
    caption_templates=None,
):
    """Resolve a spec into a source object (scans folders, prepares TFDS).

    Most code wants `build_datasets` / `load_dataset`; this is their shared
    first step, also handy to get a `DatasetInfo` alone: `resolve_dataset(spec).info`.
    The source may stand for the spec in every function that takes one
    (`build_datasets`, `load_dataset`, the recipes' `data`): a command that
    uses its data several times resolves it once (one folder scan, one TFDS
    preparation, one summary). Options given with a source must be those it
    was resolved with.

    Example:
    >>> source = resolve_dataset("digits")
    >>> source.info.counts
    {'train': 1294, 'validation': 144, 'test': 359}
    >>> load_dataset(source, "test")[1] is source.info
    True
    """
    resolved_with = {
        "validation_fraction": validation_fraction, "test_fraction": test_fraction, "data_dir": data_dir,
        "download": download, "image_key": image_key, "label_key": label_key, "train_split": train_split,
        "validation_split": validation_split, "test_split": test_split, "check_images": check_images,
        "captions_file": captions_file, "caption_key": caption_key, "caption_templates": caption_templates,
    }
    if isinstance(spec, _Source):
        defaults = inspect.signature(resolve_dataset).parameters  # the options left as they are
        return _reuse_source(spec, image_text,
                             {k: v for k, v in resolved_with.items() if v != defaults[k].default})
    kind, argument = parse_spec(spec)
    validation_fraction = check_fraction("validation_fraction", validation_fraction)
    if test_fraction is not None:
        test_fraction = check_fraction("test_fraction", test_fraction)
    options = {
        "data_dir": data_dir, "image_key": image_key, "label_key": label_key, "train_split": train_split,
        "validation_split": validation_split, "test_split": test_split, "caption_key": caption_key,
    }
    if kind != "tfds":
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            raise ValueError(f"Options {given} only apply to 'tfds:NAME' datasets; the spec is {spec!r}.")
    if captions_file is not None and kind != "folder":
        raise ValueError(f"Option `captions_file` only applies to 'folder:PATH' datasets; the spec is {spec!r}.")
    if kind == "digits":
        source = _DigitsSource(spec, validation_fraction, test_fraction, caption_templates)
    elif kind == "optdigits-train":
        source = _OptdigitsSource(spec, validation_fraction, test_fraction, caption_templates)
    elif kind == "folder":
        source = _FolderSource(
            spec, argument, validation_fraction, test_fraction if test_fraction is not None else DEFAULT_TEST_FRACTION,
            check_images, image_text=image_text, captions_file=captions_file, caption_templates=caption_templates,
        )
    else:
        source = _TfdsSource(
            spec, argument, validation_fraction, test_fraction, download=download, image_text=image_text,
            **options, caption_templates=caption_templates,
        )
    source.image_text = image_text
    source.options = {**resolved_with, "validation_fraction": validation_fraction, "test_fraction": test_fraction}
    _log_summary(source.info, image_text)
    return source



def _decoded(ds, decode_fn):
    if decode_fn is None:
        return ds
    return ds.map(lambda ex: {**ex, "image": decode_fn(ex["image"])})


def load_dataset(spec, split="train", **options):
    """One split of a classification dataset, unbatched and unshuffled.

    Args:
        spec: `"digits"`, `"tfds:NAME"`, `"folder:PATH"` or `"optdigits-train"`.
        split: `"train"`, `"validation"`, `"test"` or `"all"`.
        **options: the source options of `build_datasets` (`validation_fraction`,
            `test_fraction`, `data_dir`, `download`, `image_key`, `label_key`,
            `train_split`, `validation_split`, `test_split`, `check_images`).

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(uint8 image (H, W, C),
        int32 label)` and the `DatasetInfo`.

    Example:
    >>> ds, info = load_dataset("digits", "test")
    >>> info.counts["test"], [tuple(x.shape) for x in next(iter(ds))]
    (359, [(8, 8, 1), ()])
    """
    import tensorflow as tf

    source = resolve_dataset(spec, **options)
    ds, _ = source.examples(split)
    ds = _decoded(ds, source.decode_fn).map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
    return ds, source.info


def load_image_text_dataset(spec, split="train", **options):
    """One split of image-text pairs, unbatched and unshuffled.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts with "image" (uint8
        (H, W, C)), "captions" (1-D strings: every caption of the image) and,
        when the source has class labels, "label" (int32).

    Example:
    >>> ds, info = load_image_text_dataset("digits", "test")
    >>> example = next(iter(ds))
    >>> example["captions"].numpy()[0], int(example["label"])
    (b'a handwritten digit three', 3)
    """
    import tensorflow as tf

    source = resolve_dataset(spec, image_text=True, **options)
    ds, _ = source.caption_examples(split)

    def cast(ex):
        ex = dict(ex)
        if "label" in ex:
            ex["label"] = tf.cast(ex["label"], tf.int32)
        return ex

    return _decoded(ds, source.decode_fn).map(cast), source.info


@dataclasses.dataclass
class Datasets:
    """Train / validation / test pipelines and their `DatasetInfo`.

    `validation` / `test` are None when the source has no such split. Unpacks
    as `train, validation, test, info = build_datasets(...)`.
    """

    train: object
    validation: object
    test: object
    info: DatasetInfo

    def __iter__(self):
        return iter((self.train, self.validation, self.test, self.info))


def check_extra_train_data(spec, extra_train_data):
    """The specs of `extra_train_data` (None, a spec or a list of specs) as a
    list, checked against the dataset `spec` before anything is loaded: each
    a valid spec, none twice, none the dataset itself.

    Example:
    >>> check_extra_train_data("digits", "optdigits-train"), check_extra_train_data("digits", None)
    (['optdigits-train'], [])
    """
    if extra_train_data is None:
        return []
    specs = [extra_train_data] if isinstance(extra_train_data, str) else extra_train_data
    if not isinstance(specs, (list, tuple)) or not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError(
            "Argument `extra_train_data` must be None, a dataset spec or a non-empty list of specs "
            f"(e.g. 'optdigits-train'); received {extra_train_data!r}."
        )
    seen = [parse_spec(spec)]
    for extra_spec in specs:
        parsed = parse_spec(extra_spec)
        if parsed in seen:
            raise ValueError(
                f"`extra_train_data` names {extra_spec!r} twice or as the dataset itself ({spec!r}): "
                "each dataset may join the training data once."
            )
        seen.append(parsed)
    return list(specs)


def _extra_train_sources(spec, source, specs, source_options):
    """Resolve the extra training datasets `specs` and check that they fit
    `source` (same classes, pixel range and kind of images)."""
    info = source.info
    if specs and not info.num_classes:
        raise ValueError(f"Dataset {spec!r} has no class labels: `extra_train_data` needs a labelled dataset.")
    extras = []
    for extra_spec in specs:
        tfds_options = {k: source_options[k] for k in ("data_dir", "download") if k in source_options}
        extra = resolve_dataset(
            extra_spec, validation_fraction=0.0, check_images=source_options.get("check_images", True),
            **(tfds_options if parse_spec(extra_spec)[0] == "tfds" else {}),
        )
        mismatch = [
            what for what, ours, theirs in (
                ("class names", info.class_names, extra.info.class_names),
                ("pixel range (max_value)", info.max_value, extra.info.max_value),
                ("image format (files or arrays)", source.decode_fn is None, extra.decode_fn is None),
            ) if ours != theirs
        ]
        if mismatch:
            raise ValueError(
                f"Extra training data {extra_spec!r} does not match {spec!r}: different {', '.join(mismatch)} "
                f"({extra.info.num_classes} classes {extra.info.class_names} and max_value "
                f"{extra.info.max_value:g} against {info.num_classes} classes {info.class_names} and "
                f"{info.max_value:g}). Extra training data must have the same classes, in the same order, "
                "and the same kind of images."
            )
        extras.append(extra)
    return extras


def _join_extra_training(spec, ds, count, extras, seed):
    """The train split `ds` (`count` examples) followed by each extra
    source's train split; the pipeline's shuffle mixes them."""
    for extra in extras:
        more, more_count = extra.examples("train", True, seed)
        if more.element_spec != ds.element_spec:
            raise ValueError(
                f"Extra training data {extra.info.spec!r} has examples {more.element_spec}, which cannot "
                f"join those of {spec!r}, {ds.element_spec} (image size, channels or dtype differ)."
            )
        ds = ds.concatenate(more)
        count = None if count is None or more_count is None else count + more_count
    return ds, count


def _build(image_text, spec, image_size, batch_size, options, extra_train_data=None):
    """`build_datasets` / `build_image_text_datasets` with every option given."""
    image_size = check_image_size(image_size)
    source_options = {name: options.pop(name) for name in list(options) if name in _SOURCE_OPTIONS + _CAPTION_OPTIONS}
    drop_remainder = options.pop("drop_remainder", None)
    seed = options.setdefault("seed", 0)
    given = spec
    spec = spec.info.spec if isinstance(spec, _Source) else spec  # the spec string, for messages
    extra_specs = check_extra_train_data(spec, extra_train_data)
    source = resolve_dataset(given, image_text=image_text, **source_options)
    info = source.info
    extras = _extra_train_sources(spec, source, extra_specs, source.options)
    if extras:
        extra_counts = [e.info.counts["train"] for e in extras]
        info = dataclasses.replace(
            info,
            counts={**info.counts, "train": info.counts["train"] + sum(extra_counts)},
            splits={**info.splits, "train": "; ".join(
                [f"{info.splits.get('train', spec)} ({info.counts['train']})"]
                + [f"{e.info.spec} train ({n})" for e, n in zip(extras, extra_counts)])},
        )
        logger.info("  train with extra data: %s", info.splits["train"])
    if image_size is None and None in info.image_shape[:2]:
        raise ValueError(
            f"Dataset {spec!r} has images of mixed sizes; pass image_size=(height, width) to resize them."
        )
    pipelines = {}
    for split in ("train", "validation", "test"):
        if split not in info.counts:
            pipelines[split] = None
            continue
        training = split == "train"
        examples = source.caption_examples if image_text else source.examples
        ds, count = examples(split, training, seed)
        if training and extras:
            ds, count = _join_extra_training(spec, ds, count, extras, seed)
        pipelines[split] = _pipeline(
            ds, count=count, structure="dict" if image_text else "supervised", image_size=image_size,
            batch_size=batch_size, training=training, max_value=info.max_value, decode_fn=source.decode_fn,
            drop_remainder=drop_remainder if training else False, **options,
        )
    return Datasets(pipelines["train"], pipelines["validation"], pipelines["test"], info)


# The options of `build_datasets` / `build_image_text_datasets`: those of
# the pipeline and of `resolve_dataset` except the ones they set themselves.
_SOURCE_OPTIONS = (
    "validation_fraction", "test_fraction", "data_dir", "download", "image_key", "label_key",
    "train_split", "validation_split", "test_split", "check_images",
)
_CAPTION_OPTIONS = ("captions_file", "caption_key", "caption_templates")
_BUILD_OPTIONS = tuple(
    name for name in PIPELINE_OPTIONS if name not in ("training", "max_value", "decode_fn")
) + _SOURCE_OPTIONS


def build_datasets(spec, image_size=None, batch_size=32, *, extra_train_data=None, **options):
    """Train / validation / test classification pipelines for a dataset spec.

    Each pipeline yields `(images float32 (B, h, w, c), labels int32 (B,))`;
    only the training one shuffles, augments and drops its last partial batch
    (see `make_pipeline` for the pipeline arguments).

    Args:
        spec: `"digits"`, `"tfds:NAME"`, `"folder:PATH"` or `"optdigits-train"`.
        image_size: int or (height, width), e.g. the model's image size; None
            keeps the native size.
        batch_size: int >= 1.
        channels: None (keep), 1 or 3 (e.g. 3 for an RGB model on digits).
        rescale: divide by the source's `max_value` (digits 16, images 255) to
            get [0, 1]; False when the model's preprocessor rescales.
        augment, horizontal_flip, pad_fraction: training augmentation.
        seed: int >= 0: shuffle and augmentation seed (splits never depend on it).
        validation_fraction: fraction in [0, 1) of the training data held out
            for validation when the source has no validation split.
        test_fraction: fraction held out for testing when the source has no
            test split (None: 0.2). Digits have a fixed test split.
        shuffle_buffer, cache, drop_remainder, interpolation, batch_map_fn:
            as in `make_pipeline`.
        data_dir, download, image_key, label_key, train_split,
            validation_split, test_split: TFDS options (see `tfds_source`).
        check_images: folder sources: decode every file once while scanning
            and skip unreadable ones.
        extra_train_data: None, or a dataset spec (or list of specs) whose
            training data joins the train split, e.g. `"optdigits-train"`
            beside `"digits"`: same class names in the same order, same
            pixel range and kind of images. Each contributes its train split
            with nothing held out for validation (`validation_fraction` 0);
            validation and test stay those of `spec`. `info.counts["train"]`
            counts them all.

    Returns:
        `Datasets(train, validation, test, info)`; unpacks as a 4-tuple.

    Example:
    >>> train, val, test, info = build_datasets("digits", image_size=16, batch_size=32, channels=3)
    >>> info.num_classes, info.counts
    (10, {'train': 1294, 'validation': 144, 'test': 359})
    >>> tuple(next(iter(train))[0].shape)
    (32, 16, 16, 3)
    """
    check_options("build_datasets", options, _BUILD_OPTIONS)
    return _build(False, spec, image_size, batch_size, options, extra_train_data)


def build_image_text_datasets(spec, image_size=None, batch_size=32, **options):
    """Train / validation / test image-text pipelines for a dataset spec.

    Each pipeline yields dicts `{"images": float32 (B, h, w, c), "captions":
    string (B,), "labels": int32 (B,)}` ("labels" only for labelled sources).
    Captions come from the data (`folder:PATH` with a captions file,
    `tfds:coco_captions`-style datasets) or are made from the class names
    with `caption_templates` (digits: "a handwritten digit seven", "a photo of
    the number 7", ...; others: "a photo of a {}." ...). Training picks one
    caption per image at random each epoch; evaluation takes the first.

    Args:
        caption_templates: templates for label-made captions (see `prompts`).
        captions_file: folder sources: path of the captions file (default
            `PATH/captions.tsv` when it exists, else captions from class names).
        caption_key: TFDS text feature holding the captions, e.g.
            `"captions/text"` (default: detected).
        **others: as in `build_datasets`.

    Returns:
        `Datasets(train, validation, test, info)`.

    Example:
    >>> train, _, test, info = build_image_text_datasets("digits", image_size=8, batch_size=4)
    >>> batch = next(iter(test))
    >>> tuple(batch["images"].shape), batch["captions"].numpy()[0]
    ((4, 8, 8, 1), b'a handwritten digit three')
    """
    check_options("build_image_text_datasets", options, _BUILD_OPTIONS + _CAPTION_OPTIONS)
    return _build(True, spec, image_size, batch_size, options)
