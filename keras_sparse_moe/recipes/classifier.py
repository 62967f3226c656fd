"""Train and evaluate image classifiers built from presets.

`train_classifier` (what `train` and `keras-sparse-moe train` run for an
image classifier) loads the classifier from a preset, a `.keras` file or a
model, with its head sized from the data; trains it on the `tf.data`
pipelines of a dataset spec with label-smoothed cross-entropy (the MoE
auxiliary losses are added by the layers) and `RoutingStatistics`; and
evaluates it like `evaluate_classifier` (`keras-sparse-moe evaluate`):
accuracy, macro-F1, per-class precision / recall / F1, confusion matrix,
latency per image and routing statistics per MoE layer and per class.

Artifacts written by `train_classifier` into `output_dir`: `model.keras`,
`preset/` (keras-hub preset directory), `metrics.json`, `run.json` (the
settings and state of the run), `log.csv`, `best.keras`, `last.keras`,
`training_curves.png` and `routing_heatmap.png`.
"""

import logging
import math
import os
import time
import warnings

import numpy as np

from keras_sparse_moe.data.sources import Datasets
from keras_sparse_moe.data.sources import parse_spec
from keras_sparse_moe.models.raw_image_input import check_raw_image_shape
from keras_sparse_moe.recipes.augment import make_augmentation
from keras_sparse_moe.recipes.metrics import classification_report
from keras_sparse_moe.recipes.run_lock import exclusive_run
from keras_sparse_moe.recipes.run_state import HEATMAP_FILE
from keras_sparse_moe.recipes.run_state import LOG_FILE
from keras_sparse_moe.recipes.run_state import METRICS_FILE
from keras_sparse_moe.recipes.training_run import TrainingRun
from keras_sparse_moe.utils.io import check_writable_directory
from keras_sparse_moe.utils.io import load_keras_file
from keras_sparse_moe.utils.io import write_json
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_int

logger = logging.getLogger("keras_sparse_moe.recipes")

DEFAULT_PRESET = "moe_vit_tiny"
# Settings that must match to resume an interrupted run.
_RESUME_KEYS = (
    "preset", "data", "epochs", "batch_size", "learning_rate", "weight_decay",
    "label_smoothing", "warmup_fraction", "clipnorm", "augment", "seed",
    "validation_fraction", "overrides", "max_batches", "ema_momentum", "data_options",
    "load_weights",
)
# Values of resume keys that older run.json files do not record.
_RESUME_DEFAULTS = {"load_weights": True}
_NO_DECAY = ("bias", "gamma", "beta", "class_token", "position_embedding")

# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def _is_classifier(model):
    import keras_hub

    return isinstance(model, keras_hub.models.ImageClassifier)


def _not_a_classifier(label, model):
    family = type(model).__module__.split(".")
    family = family[2] if len(family) > 2 and family[1] == "models" else "other"
    hint = ""
    if "dual" in type(model).__name__.lower() or family == "moe_dual_encoder":
        hint = (
            " It is a dual (image-text) encoder: train it on image-text pairs with "
            "recipes/dual_encoder.py (contrastive loss), and classify with its zero-shot "
            "classifier."
        )
    return ValueError(
        f"Model {label!r} is a {type(model).__name__}, not an image classifier, so it "
        f"cannot be trained or evaluated on image-label data.{hint} Image classifier "
        "presets: moe_vit_tiny, moe_vit_tiny_digits, vmoe_s32_e8_k2_last2, ... (see "
        "`keras-sparse-moe presets --family moe_vit`)."
    )


def load_classifier(model, num_classes=None, load_weights=True, overrides=None):
    """An image classifier from a model, a `.keras` file, a preset directory
    or a registered preset name.

    Args:
        model: a `keras_hub.models.ImageClassifier` (returned as is), a path
            to a `.keras` file, a preset directory, a registered preset name
            or an `hf://` / `kaggle://` handle.
        num_classes: None (keep the model's) or int: rebuild a preset with a
            new classification head of this size when it differs.
        load_weights: bool, load the preset's weights when it ships some.
        overrides: None or dict of preset overrides (backbone / task
            constructor arguments, e.g. `{"dropout": 0.1}`).

    Returns:
        The classifier.

    Raises:
        ValueError: the model is not an image classifier (e.g. a dual
            encoder), or an unknown preset / bad override.
        FileNotFoundError: a `.keras` file or preset directory is missing.

    Example:
    >>> classifier = load_classifier("moe_vit_tiny", num_classes=3)
    >>> classifier.num_classes
    3
    """
    import keras

    from keras_sparse_moe.presets import from_preset

    overrides = dict(overrides or {})
    if "num_classes" in overrides:
        requested = overrides.pop("num_classes")
        if num_classes is not None and requested != num_classes:
            raise ValueError(
                f"Preset override num_classes={requested!r} contradicts the {num_classes} classes "
                "of the data: the classifier's head is sized from the data, so leave "
                "num_classes out of the overrides."
            )
        num_classes = check_int("num_classes", requested, minimum=1)
    if isinstance(model, keras.Model):
        if not _is_classifier(model):
            raise _not_a_classifier(getattr(model, "name", "model"), model)
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "Argument `model` must be a Keras image classifier, a .keras file, a preset "
            f"directory or a preset name; received {type(model).__name__}."
        )
    label = os.fspath(model)
    if label.endswith(".keras"):
        if not os.path.isfile(label):
            raise FileNotFoundError(f"No model file at {label!r}.")
        if overrides:
            raise ValueError(
                f"Preset overrides {sorted(overrides)} cannot be applied to a saved model "
                f"({label!r}); use a preset name or directory."
            )
        loaded = load_keras_file(label)
        if not _is_classifier(loaded):
            raise _not_a_classifier(label, loaded)
        return loaded
    if os.path.sep in label and not os.path.exists(label) and "://" not in label:
        raise FileNotFoundError(f"No preset directory or model file at {label!r}.")
    with warnings.catch_warnings():
        # Presets saved after training hold optimizer variables; inference does not need them.
        warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
        classifier = from_preset(label, load_weights=load_weights, **overrides)
    if not _is_classifier(classifier):
        raise _not_a_classifier(label, classifier)
    if num_classes is not None and classifier.num_classes != num_classes:
        logger.info(
            "%s has %d classes, the data %d: building a new %d-class head.",
            label, classifier.num_classes, num_classes, num_classes,
        )
        classifier = from_preset(
            label, load_weights=load_weights, num_classes=num_classes, **overrides
        )
    return classifier


def match_converter_to_data(model, max_value):
    """Make the classifier's image converter map raw pixels in
    `[0, max_value]` to the range it was configured for.

    Presets configure their converter for their usual data: the digits
    presets map 0..16 to [0, 1], the RGB presets map 0..255 to [-1, 1]. When a
    dataset's largest raw value differs (e.g. 0..255 photos on a digits
    preset), the scale is changed so the model input keeps that range.

    Returns:
        True when the scale was changed.

    Example:
    >>> model = load_classifier("moe_vit_tiny")
    >>> match_converter_to_data(model, 255.0), round(model.preprocessor.image_converter.scale, 5)
    (True, 0.00392)
    """
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    scale = getattr(converter, "scale", None)
    if scale is None or not max_value:
        return False
    offset = converter.offset
    mean_scale = float(np.mean(scale))
    mean_offset = float(np.mean(offset)) if offset is not None else 0.0
    top = 1.0 - min(mean_offset, 0.0)
    expected = top / mean_scale if mean_scale else 0.0
    if not expected or abs(expected / float(max_value) - 1.0) < 0.02:
        return False
    factor = expected / float(max_value)
    if isinstance(scale, (list, tuple)):
        converter.scale = type(scale)(float(s) * factor for s in scale)
    else:
        converter.scale = float(scale) * factor
    logger.info(
        "The image converter expected raw values up to %g; the data goes up to %g: "
        "scale set to %s.", expected, max_value, converter.scale,
    )
    return True


def data_conversion_message(data, data_shape, model_shape, native_shape=None):
    """None, or the sentence saying how images of `data_shape` are converted
    for a model taking `model_shape` (channels, then a bilinear resize, as
    the pipelines of `build_datasets` do). None too when the data has the
    `native_shape` the model's preprocessor declares (`raw_image_shape`,
    e.g. the 8x8x1 digits that `moe_vit_tiny` upsamples to 16x16).

    Training converts rather than refuses: a preset's image size and
    channels are part of its architecture (and of its weights), so data of
    another kind is adapted to it; to train at the data's own size, override
    the preset's `image_shape` (`--set image_shape=[32,32,3]`).

    Example:
    >>> data_conversion_message("folder:photos", (32, 32, 3), (16, 16, 1))
    "Dataset 'folder:photos' has 32x32x3 images; the model takes 16x16x1: every image is converted RGB -> grayscale (ITU-R BT.601 luma) and resized to 16x16 (bilinear). Pass --set image_shape=[32,32,3] (Python: overrides={'image_shape': (32, 32, 3)}) to train at the data's size."
    >>> data_conversion_message("digits", (8, 8, 1), (16, 16, 1), native_shape=(8, 8, 1)) is None
    True
    """
    if data_shape is None or (native_shape and tuple(data_shape) == tuple(native_shape)):
        return None
    height, width, channels = tuple(data_shape)
    target = tuple(int(d) for d in model_shape)
    steps = []
    if channels is not None and channels != target[2]:
        steps.append("converted RGB -> grayscale (ITU-R BT.601 luma)" if target[2] == 1
                     else "converted grayscale -> RGB (the channel repeated)")
    if height is None or width is None:
        steps.append(f"resized to {target[0]}x{target[1]} (bilinear; the images have mixed sizes)")
    elif (height, width) != target[:2]:
        steps.append(f"resized to {target[0]}x{target[1]} (bilinear)")
    if not steps:
        return None
    shown = "x".join("?" if d is None else str(d) for d in (height, width, channels))
    native = ",".join(str(d) for d in (height, width, channels or target[2]))
    advice = ""
    if height is not None and width is not None:
        advice = (f" Pass --set image_shape=[{native}] (Python: overrides={{'image_shape': "
                  f"({native.replace(',', ', ')})}}) to train at the data's size.")
    return (f"Dataset {data!r} has {shown} images; the model takes "
            f"{'x'.join(str(d) for d in target)}: every image is "
            f"{' and '.join(steps)}.{advice}")


def preprocess(model, images):
    """Model inputs for raw `images` (the model's preprocessor, if any), as a
    float32 NumPy array.

    Example:
    >>> import numpy as np
    >>> model = load_classifier("moe_vit_tiny")
    >>> x = preprocess(model, np.full((1, 8, 8, 1), 16, "uint8"))
    >>> x.shape, float(x.max())
    ((1, 16, 16, 1), 1.0)
    """
    from keras import ops

    preprocessor = getattr(model, "preprocessor", None)
    images = np.asarray(images, dtype="float32")
    if preprocessor is None:
        return images
    return np.asarray(ops.convert_to_numpy(preprocessor(images)), dtype="float32")


def param_counts(model):
    """`{"total", "active"}` trainable parameters of a classifier (active:
    per token, as in `keras_sparse_moe.profile`), plus `"flops"` per example
    when the profiler can compute them.

    Example:
    >>> counts = param_counts(load_classifier("moe_vit_tiny"))
    >>> counts["total"] > counts["active"] > 0
    True
    """
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    try:
        from keras_sparse_moe.profile import profile

        report = profile(model)
        return {
            "total": int(report.params_total),
            "active": int(report.params_active),
            "flops": int(report.flops),
        }
    except Exception as error:  # noqa: BLE001 - the counts are a report, not a requirement
        logger.debug("profile() failed (%s); counting trainable weights only.", error)
        return {"total": trainable, "active": trainable, "flops": None}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def _datasets(model, data, batch_size, augment, seed, validation_fraction, data_options, training,
              raw_shape=None):
    from keras_sparse_moe.data import Datasets
    from keras_sparse_moe.data import build_datasets

    if isinstance(data, Datasets):  # ready pipelines
        if data_options:
            raise ValueError("Argument `data_options` applies to dataset specs, not to a Datasets.")
        if not data.info.num_classes:
            raise ValueError(f"Dataset {data.info.spec!r} has no class labels.")
        return data
    image_shape = tuple(model.backbone.image_shape)
    options = dict(data_options or {})
    options.setdefault("validation_fraction", validation_fraction)
    datasets = build_datasets(
        data,
        image_size=tuple(raw_shape or image_shape)[:2],
        batch_size=batch_size,
        channels=tuple(raw_shape or image_shape)[2],
        rescale=False,
        augment=training and augment == "shift",
        seed=seed,
        cache=options.pop("cache", _small(data)),
        **options,
    )
    info = datasets.info
    if not info.num_classes:
        raise ValueError(
            f"Dataset {data!r} has no class labels, so a classifier cannot be trained or "
            "evaluated on it (for image-text data use the dual encoder recipe)."
        )
    return datasets


def check_labels(datasets, num_classes):
    """Check, before training, that every label of a `Datasets`' splits is a
    class index in `[0, num_classes)` (a label outside would be trained on
    silently: an all-zero one-hot target, or garbage on some backends).

    Raises:
        ValueError naming the split, the label and the class count.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.data import Datasets, DatasetInfo, make_pipeline
    >>> train = make_pipeline(np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 50]), batch_size=2)
    >>> info = DatasetInfo("mine", "arrays", 10, tuple(str(i) for i in range(10)), {"train": 4})
    >>> check_labels(Datasets(train, None, None, info), 10)
    Traceback (most recent call last):
    ...
    ValueError: The train split of dataset 'mine' has label 50, but the model has 10 classes: labels must be class indices 0..9.
    """
    for split in ("train", "validation", "test"):
        ds = getattr(datasets, split)
        if ds is None:
            continue
        for _, labels in ds:
            labels = np.asarray(labels)
            bad = labels[(labels < 0) | (labels >= num_classes)]
            if bad.size:
                raise ValueError(
                    f"The {split} split of dataset {datasets.info.spec!r} has label "
                    f"{bad.flat[0]}, but the model has {num_classes} classes: labels must be "
                    f"class indices 0..{num_classes - 1}."
                )


def _small(data):
    """Cache decoded images in memory for the small embedded dataset."""
    spec = getattr(getattr(data, "info", None), "spec", data)  # a spec or a resolved source
    return isinstance(spec, str) and spec.strip().lower() == "digits"


def representative_images(model, data="digits", samples=256, seed=0, data_options=None,
                          raw_shape=None):
    """Training images for full-integer (int8) LiteRT calibration:
    preprocessed model inputs, or with `raw_shape` raw images of that
    `(height, width, channels)` (for a file that includes the
    preprocessing; the digits' native 8x8x1 is a no-op).

    Args:
        model: a classifier (or anything `load_classifier` accepts).
        data: dataset spec; images come from its training split, shuffled with
            `seed`, without augmentation.
        samples: int >= 1, number of images.
        seed: int >= 0.
        data_options: dict of extra `build_datasets` options.
        raw_shape: None (model inputs) or the raw image shape
            `(height, width, channels)`.

    Returns:
        float32 array `(samples, height, width, channels)`.

    Example:
    >>> images = representative_images(load_classifier("moe_vit_tiny"), "digits", 16)
    >>> images.shape  # digits upsampled to moe_vit_tiny's 16x16 input
    (16, 16, 16, 1)
    """
    model = load_classifier(model)
    samples = check_int("samples", samples, minimum=1)
    raw_shape = check_raw_image_shape(raw_shape, name="raw_shape")
    datasets = _datasets(model, data, 64, "none", seed, 0.1, data_options, training=False,
                         raw_shape=raw_shape)
    if datasets.train is None:
        raise ValueError(f"Dataset {data!r} has no training split to calibrate on.")
    match_converter_to_data(model, datasets.info.max_value)
    images = []
    for batch, _ in datasets.train.unbatch().batch(64).take(math.ceil(samples / 64)):
        images.append(np.asarray(batch))
    images = np.concatenate(images)[:samples]
    return np.asarray(images, dtype="float32") if raw_shape else preprocess(model, images)


def litert_test_accuracy(model, path, data="digits", split="test", data_options=None):
    """Accuracy of a `.tflite` export of `model` on a split of `data`.

    A file that includes the preprocessing gets the raw images of the split
    (at the file's input size); otherwise the images go through `model`'s
    preprocessor first. Then the LiteRT interpreter runs them.

    Returns:
        `(accuracy, number of images)`.

    Example:
    >>> # litert_test_accuracy(model, "model.tflite", "digits") -> (0.97, 359)
    """
    from keras_sparse_moe.export import LiteRTModel

    model = load_classifier(model)
    runner = LiteRTModel(path)
    datasets = _datasets(model, data, 128, "none", 0, 0.1, data_options, training=False,
                         raw_shape=(tuple(int(d) for d in runner.input["shape"][1:])
                                    if runner.raw_input else None))
    match_converter_to_data(model, datasets.info.max_value)
    ds = getattr(datasets, split)
    if ds is None:
        raise ValueError(f"Dataset {data!r} has no {split!r} split.")
    correct = total = 0
    for images, labels in ds:
        images = np.asarray(images)
        if runner.raw_input and np.dtype(runner.input["dtype"]) == np.uint8:
            images = np.clip(np.round(images), 0, 255)  # resized images, as an app would send
        logits = runner(images if runner.raw_input else preprocess(model, images))
        correct += int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))
        total += len(labels)
    return correct / max(total, 1), total


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def _batch_multiple(model):
    """Batch sizes must be a multiple of this (routing groups spanning images)."""
    from keras_sparse_moe.recipes.routing import moe_layer_paths

    multiple = 1
    for _, layer in moe_layer_paths(model):
        multiple = math.lcm(multiple, layer.batch_multiple())
    return multiple


def _predict_with_routing(model, ds, batch_size, routing_examples):
    """One pass over `ds`: predicted classes, labels, seconds per image (the
    batches after the first, which compiles), the first image (raw) and the
    routing tally of the first batches covering `routing_examples` images.

    Every batch is padded to one static size (one compiled shape; the
    padding is masked in the MoE layers), preprocessed as `predict` does,
    and run by a `RoutingForward`, which returns the logits together with
    the routing of the MoE layers.
    """
    from keras_sparse_moe.recipes.routing import RoutingForward
    from keras_sparse_moe.recipes.routing import RoutingTally
    from keras_sparse_moe.recipes.routing import pad_batch

    multiple = _batch_multiple(model)
    padded_size = max(multiple, math.ceil(batch_size / multiple) * multiple)
    forward = RoutingForward(model)
    tally = RoutingTally(forward, model.num_classes)
    predictions, labels = [], []
    seconds, timed, first = 0.0, 0, None

    def run(batch, valid):
        start = time.perf_counter()
        outputs = forward(preprocess(model, batch), valid)
        return outputs, time.perf_counter() - start

    for images, batch_labels in ds:
        images, batch_labels = np.asarray(images), np.asarray(batch_labels)
        n = len(images)
        batch, valid = pad_batch(images, padded_size)
        (logits, routings), elapsed = run(batch, valid)
        if first is None:  # the first batch compiles / traces: not timed
            first = (batch, valid, n)
        else:
            seconds, timed = seconds + elapsed, timed + n
        predictions.append(np.argmax(logits[:n], axis=-1))
        labels.append(batch_labels)
        if forward.layers and tally.examples < routing_examples:
            tally.add(routings, valid, batch_labels)
    if first is None:
        raise ValueError("The evaluation split is empty.")
    if not timed:  # a single batch: time it again
        seconds, timed = run(first[0], first[1])[1], first[2]
    return (np.concatenate(predictions), np.concatenate(labels), seconds / timed,
            first[0][0], tally)


def _single_image_latency(model, image, repeats=20, budget_s=1.0):
    """Median time of `predict_on_batch` on one image, in ms, over `repeats`
    runs after a warm-up (at least 5 runs; fewer than `repeats` when they
    take more than `budget_s` seconds in all)."""
    if _batch_multiple(model) != 1:
        return None
    batch = np.asarray(image)[None]
    model.predict_on_batch(batch)
    times = []
    while len(times) < repeats and (len(times) < 5 or sum(times) < budget_s):
        start = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _routing_summary(tally):
    return {
        name: {
            "by_class": stats["by_class"].round(6).tolist(),
            "expert_fraction": stats["expert_fraction"].round(6).tolist(),
            "load_imbalance": stats["load_imbalance"],
            "dropped_fraction": stats["dropped_fraction"],
            "kind": stats["kind"],
            "examples": int(tally.examples),
        }
        for name, stats in tally.result().items()
    }


def _evaluate(model, ds, info, batch_size, routing_examples, single_latency):
    predicted, labels, seconds, first_image, tally = _predict_with_routing(
        model, ds, batch_size, routing_examples)
    report = classification_report(labels, predicted, info.num_classes, info.class_names)
    report["latency_ms_per_image"] = float(seconds * 1e3)
    report["latency_batch_size"] = int(batch_size)
    if single_latency:
        report["latency_ms_single_image"] = _single_image_latency(model, first_image)
    return report, _routing_summary(tally)


def _metrics(label, data, split, report, routing, counts, start, fit=None):
    """The metrics of an evaluation of model `label` (`report`, `routing`:
    those of `_evaluate`; `counts`: `param_counts`; `start`: the `time()`
    the call started), with the results of a training run's `fit` stage."""
    import keras

    fit = fit or {}
    return {
        "model": label,
        "data": data,
        "split": split,
        **{k: v for k, v in report.items() if k not in ("per_class", "confusion_matrix")},
        "params_total": counts["total"],
        "params_active": counts["active"],
        "flops_per_example": counts.get("flops"),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "cpu_count": os.cpu_count(),
        **{k: fit[k] for k in ("epochs_run", "resumed_from_epoch", "train_time_s") if fit},
        "wall_time_s": time.time() - start,
        **({"history": fit["history"]} if fit else {}),
        "per_class": report.get("per_class", []),
        "confusion_matrix": report.get("confusion_matrix", []),
        "routing": routing,
    }


def evaluate_classifier(
    model,
    data="digits",
    *,
    split="test",
    batch_size=128,
    output_dir=None,
    data_options=None,
    routing_examples=1024,
    single_image_latency=True,
    max_batches=None,
    plots=True,
):
    """Evaluate an image classifier on a split of a dataset.

    Args:
        model: a classifier, a `.keras` file, a preset directory or a preset
            name (e.g. `"moe_vit_tiny_digits"`).
        data: dataset spec (`"digits"`, `"optdigits-train"`, `"tfds:NAME"`,
            `"folder:PATH"`).
        split: `"test"` (default) or `"validation"`.
        batch_size: int >= 1.
        output_dir: None, or a directory to write `metrics.json` (and
            `routing_heatmap.png` for MoE models) into.
        data_options: dict of extra `build_datasets` options (e.g.
            `{"data_dir": ...}` for TFDS).
        routing_examples: int >= 0, images of the split used for the routing
            statistics (0: none): the first batches holding at least that
            many (they come from the same pass as the predictions).
        single_image_latency: also time batches of one image.
        max_batches: None, or evaluate on at most this many batches (quick
            checks; the metrics then cover part of the split).
        plots: write the routing heatmap when `output_dir` is given.

    Returns:
        A dict: `accuracy`, `macro_f1`, `macro_precision`, `macro_recall`,
        `examples`, `latency_ms_per_image` (batched), optionally
        `latency_ms_single_image`, `per_class`, `confusion_matrix`,
        `routing`, `model`, `data`, `split`, `backend`, `params_total`,
        `params_active`, `wall_time_s`.

    Example:
    >>> metrics = evaluate_classifier("moe_vit_tiny_digits", "digits", max_batches=1,
    ...                               routing_examples=0, single_image_latency=False)
    >>> metrics["accuracy"] > 0.9
    True
    """
    start = time.time()
    split = check_choice("split", split, ("validation", "test"))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    routing_examples = check_int("routing_examples", routing_examples, minimum=0)
    if max_batches is not None:
        max_batches = check_int("max_batches", max_batches, minimum=1)
    if output_dir is not None:
        check_writable_directory(output_dir)
    label = _label(model)
    model = load_classifier(model)
    datasets = _datasets(model, data, batch_size, "none", 0, 0.1, data_options, training=False)
    info = datasets.info
    if model.num_classes != info.num_classes:
        raise ValueError(
            f"Model {label!r} predicts {model.num_classes} classes but dataset "
            f"{data!r} has {info.num_classes}; evaluate on the data it was trained on, or "
            "train a new head with train_classifier."
        )
    match_converter_to_data(model, info.max_value)
    ds = getattr(datasets, split)
    if ds is None:
        raise ValueError(f"Dataset {data!r} has no {split!r} split; its splits are {sorted(info.counts)}.")
    ds = ds if max_batches is None else ds.take(max_batches)
    logger.info("Evaluating on the %s split of %s ...", split, data)
    report, routing = _evaluate(model, ds, info, batch_size, routing_examples, single_image_latency)
    metrics = _metrics(label, data, split, report, routing, param_counts(model), start)
    if output_dir is not None:
        write_json(os.path.join(output_dir, METRICS_FILE), metrics)
        if plots and routing:
            from keras_sparse_moe.recipes.plots import plot_routing_heatmap

            plot_routing_heatmap(routing, info.class_names, os.path.join(output_dir, HEATMAP_FILE))
    return metrics


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
@exclusive_run
def train_classifier(
    preset=DEFAULT_PRESET,
    data="digits",
    output_dir="runs/train",
    config=None,
    *,
    overrides=None,
    load_weights=True,
    data_options=None,
    routing_examples=1024,
    single_image_latency=True,
    save_preset=True,
    plots=True,
    overwrite=False,
    callbacks=(),
    jit_compile="auto",
    run_eagerly=False,
    verbose=1,
    return_model=False,
):
    """Train an image classifier from a preset and evaluate it on the test
    split (`train` calls this for classifiers).

    The run resumes, completes or returns an earlier run in `output_dir`
    as `TrainingRun` says. It holds `output_dir` (`run.lock`) while it
    lasts: a second run into the same directory fails at once
    (`RunDirectoryLocked`, naming the holder's PID and host).

    Args:
        preset: preset name (e.g. `"moe_vit_tiny"`), preset directory or
            `.keras` file of an image classifier, or a classifier.
        data: dataset spec: `"digits"`, `"optdigits-train"`, `"tfds:NAME"`
            or `"folder:PATH"`; or a `Datasets` of ready pipelines (batched
            `(raw images at the model's input size, labels)`, e.g. from
            `make_pipeline`; `info.spec` names it in `run.json`).
        output_dir: directory for the artifacts (created; must be writable).
        config: a `TrainingConfig` (None: the defaults).
        overrides: dict of preset overrides, e.g. `{"dropout": 0.1,
            "stochastic_depth": 0.1}`.
        load_weights: load the preset's weights when it ships some.
        data_options: dict of extra `build_datasets` options (TFDS
            `data_dir`, `download`, splits, `extra_train_data`, ...).
        routing_examples: int >= 0, test images used for the routing heatmap.
        single_image_latency: also time one-image batches.
        save_preset: write `output_dir/preset/`.
        plots: write the PNG figures.
        overwrite: remove the artifacts of a previous run first.
        callbacks: extra Keras callbacks.
        jit_compile: `"auto"`, True or False, as in `keras.Model.compile`.
        run_eagerly: run `fit` and the evaluation step by step without
            compiling a graph (faster for a few steps, e.g. smoke tests).
        verbose: 0 (silent), 1 (progress bar) or 2 (one line per epoch).
        return_model: also return the trained model.

    Returns:
        The metrics dict also written to `metrics.json` (see
        `evaluate_classifier`), plus `epochs_run`, `train_time_s`, `history`
        (final epoch logs), `artifacts`, `settings` and `resumed_from_epoch`;
        with `return_model=True`, a `(metrics, model)` pair.

    Example:
    >>> import tempfile
    >>> from keras_sparse_moe.recipes.config import TrainingConfig
    >>> metrics = train_classifier("moe_vit_tiny", "digits", tempfile.mkdtemp(),
    ...     TrainingConfig(epochs=1, max_batches=2), verbose=0, plots=False,
    ...     routing_examples=0, single_image_latency=False,
    ...     overrides={"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2})
    >>> metrics["epochs_run"], metrics["examples"]  # two test batches of 64
    (1, 128)
    >>> import numpy as np
    >>> correct = np.trace(metrics["confusion_matrix"])
    >>> bool(np.isclose(metrics["accuracy"], correct / 128))
    True
    """
    from keras_sparse_moe.recipes.config import check_config

    start = time.time()
    config = check_config(config)
    epochs, batch_size, seed, augment = config.epochs, config.batch_size, config.seed, config.augment
    routing_examples = check_int("routing_examples", routing_examples, minimum=0)
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"Argument `jit_compile` must be 'auto', True or False; received {jit_compile!r}.")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"Argument `overrides` must be a dict or None; received {overrides!r}.")
    if overrides and "num_classes" in overrides:
        raise ValueError(
            f"Preset override num_classes={overrides['num_classes']!r} is not allowed when "
            "training: the classifier's head is sized from the classes of the data, so leave "
            "num_classes out of the overrides."
        )
    preset_label = _label(preset)
    datasets, data = (data, data.info.spec) if isinstance(data, Datasets) else (None, data)
    settings = {
        "preset": preset_label, "data": data, **config.to_dict(),
        "overrides": dict(overrides or {}), "load_weights": bool(load_weights),
        "data_options": dict(data_options or {}),
    }
    # Validate the data spec before touching the output directory.
    if datasets is None:
        parse_spec(data)
    run = TrainingRun(output_dir, settings, config, keys=_RESUME_KEYS, logger=logger,
                      overwrite=overwrite, defaults=_RESUME_DEFAULTS)
    output_dir = run.output_dir
    if run.state == "finished":
        metrics = run.previous_metrics()
        if return_model:
            return metrics, load_classifier(run.model_file)
        return metrics

    import keras

    from keras_sparse_moe.callbacks import RoutingStatistics
    from keras_sparse_moe.recipes.training import SparseCategoricalCrossentropyWithSmoothing
    from keras_sparse_moe.recipes.training import read_log

    model = load_classifier(preset, load_weights=load_weights, overrides=overrides)
    # (When this fails, `exclusive_run` removes a directory it created for the run.)
    train, validation, test, info = _datasets(
        model, data if datasets is None else datasets, batch_size, augment, seed,
        config.validation_fraction, data_options, training=True,
    )
    if train is None:
        raise ValueError(f"Dataset {data!r} has no training split.")
    if datasets is not None:  # ready pipelines: their labels are the caller's
        check_labels(datasets, info.num_classes)
    if test is None and validation is None:
        logger.warning(
            "Dataset %s has neither a test nor a validation split with these options (too few "
            "images per class to carve them out): the run trains but reports no accuracy. Give "
            "it more images, or train/ and test/ sub-folders.", data)
    elif test is None:
        logger.warning("Dataset %s has no test split: the final metrics use the validation split.", data)
    if model.num_classes != info.num_classes:
        if not isinstance(preset, (str, os.PathLike)) or preset_label.endswith(".keras"):
            raise ValueError(
                f"The model predicts {model.num_classes} classes but dataset {data!r} has "
                f"{info.num_classes}; give a preset name or directory so that a new head "
                "can be built."
            )
        model = load_classifier(preset, num_classes=info.num_classes, load_weights=load_weights,
                                overrides=overrides)
    match_converter_to_data(model, info.max_value)
    converter = getattr(model.preprocessor, "image_converter", None)
    conversion = data_conversion_message(data, info.image_shape, model.backbone.image_shape,
                                         getattr(converter, "raw_image_shape", None))
    if conversion:
        logger.warning(conversion)
    if hasattr(converter, "raw_image_shape") and None not in tuple(info.image_shape or (None,)):
        # The model's raw input is now this data's: a LiteRT export takes it by default.
        converter.raw_image_shape = tuple(int(d) for d in info.image_shape)
    augmentation = make_augmentation(augment, seed=seed)
    if augmentation is not None:
        import tensorflow as tf

        train = train.map(augmentation, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    steps = run.steps_per_epoch(train, info.counts.get("train"))
    train, validation, test = run.limit(train, validation, test)
    run.compile(
        model, steps, _NO_DECAY,
        loss=SparseCategoricalCrossentropyWithSmoothing(config.label_smoothing, from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        run_eagerly=bool(run_eagerly),
    )
    counts = param_counts(model)
    artifacts = {"model": run.model_file}

    def fit():
        resumed_from = run.resumed_from_epoch()
        if resumed_from:
            logger.info("Resuming %s after epoch %d of %d.", output_dir, resumed_from, epochs)
        logger.info(
            "Training %s (%s parameters, %s active per token) on %s for %d epochs (%d steps "
            "each), batch %d, backend %s.", preset_label, f"{counts['total']:,}",
            f"{counts['active']:,}", data, epochs, steps, batch_size, keras.backend.backend(),
        )
        # RoutingStatistics first: it adds its values to the epoch logs that the
        # CSV logger and the checkpoints then see.
        history, train_time = run.fit(model, train, validation, callbacks=callbacks,
                                      first_callbacks=[RoutingStatistics()], verbose=verbose)
        log = read_log(os.path.join(output_dir, LOG_FILE))
        return {
            "epochs_run": len(next(iter(log.values()), [])),
            "resumed_from_epoch": resumed_from,
            "train_time_s": train_time,
            # (Empty when all epochs were done before an interruption.)
            "history": {k: float(v[-1]) for k, v in history.history.items() if v}
            or {k: v[-1] for k, v in log.items() if v},
        }

    fit_record = run.train(model, fit)
    if save_preset:
        artifacts["preset"] = os.path.abspath(run.save_preset(model))
    eval_ds = test if test is not None else validation
    eval_split = "test" if test is not None else "validation"
    report, routing = ({}, {})
    if "evaluation" in run.stages or eval_ds is not None:
        def evaluate():
            logger.info("Evaluating on the %s split ...", eval_split)
            report, routing = _evaluate(model, eval_ds, info, batch_size, routing_examples,
                                        single_image_latency)
            return {"report": report, "routing": routing}

        evaluation = run.stage("evaluation", evaluate)
        report, routing = evaluation["report"], evaluation["routing"]
    metrics = {
        **_metrics(preset_label, data, eval_split, report, routing, counts, start, fit_record),
        "settings": settings, "dataset": info.to_dict(), "artifacts": artifacts,
    }
    if plots:
        from keras_sparse_moe.recipes.plots import plot_run

        artifacts.update(plot_run(output_dir, routing, info.class_names, title=preset_label))
    metrics["wall_time_s"] = time.time() - start
    run.finish(metrics)
    logger.info(
        "%s: %s accuracy %.4f, macro-F1 %.4f (%d images); wrote %s.", preset_label, eval_split,
        metrics.get("accuracy", float("nan")), metrics.get("macro_f1", float("nan")),
        metrics.get("examples", 0), output_dir,
    )
    return (metrics, model) if return_model else metrics


def _label(model):
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", "model")

