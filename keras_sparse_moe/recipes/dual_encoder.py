"""Train and evaluate contrastive MoE dual encoders (LIMoE) built from presets.

`train_dual_encoder` trains a `MoEDualEncoderContrastive` model (e.g. the
`limoe_tiny` preset) on image-caption pairs of a dataset spec (`digits`,
`folder:PATH` with captions, `tfds:NAME`), with:

- captions from the data or made from class names with templates;
- the softmax contrastive loss; when the data has labels, images and
  captions of the same class in a batch are all counted as positive pairs
  (targets normalised per row), so repeated class captions are not treated
  as negatives;
- light image augmentation (random shifts);
- zero-shot test accuracy from text prompts only (`evaluate_zero_shot`):
  each class name is put into several templates, the text embeddings are
  averaged per class, and each test image gets the class of the closest
  (cosine) class embedding.

Artifacts in `output_dir`: those of `train_classifier` (`model.keras`,
`preset/`, `metrics.json`, `run.json`, `log.csv`, ...).
"""

import logging
import os
import time

import numpy as np

from keras_sparse_moe.models.moe_dual_encoder import class_text_embeddings
from keras_sparse_moe.models.moe_dual_encoder import load_dual_encoder
from keras_sparse_moe.models.moe_dual_encoder import pack_prompts  # noqa: F401 - part of this module's API
from keras_sparse_moe.models.raw_image_input import check_raw_image_shape
from keras_sparse_moe.recipes.run_lock import exclusive_run
from keras_sparse_moe.recipes.run_state import LOG_FILE
from keras_sparse_moe.recipes.training_run import TrainingRun
from keras_sparse_moe.utils.validation import check_data_options
from keras_sparse_moe.utils.validation import check_int

DEFAULT_PRESET = "limoe_tiny"
logger = logging.getLogger(__name__)
# Settings that must match to resume an interrupted run or reuse a finished one.
_RESUME_KEYS = (
    "preset", "data", "epochs", "batch_size", "learning_rate", "weight_decay",
    "warmup_fraction", "clipnorm", "augment", "seed", "templates", "max_batches",
)
# Kept out of weight decay.
_NO_DECAY = ("bias", "gamma", "beta", "embedding", "temperature")


def _datasets(model, data, batch_size, augment, seed, training=True, data_options=None,
              image_shape=None):
    from keras_sparse_moe.data import build_image_text_datasets

    image_shape = tuple(image_shape or model.backbone.image_shape)
    return _image_text(data, data_options, build_image_text_datasets,
                       image_size=image_shape[:2], batch_size=batch_size,
                       channels=image_shape[-1], rescale=False, augment=augment, seed=seed,
                       drop_remainder=training)


def _resolve(data, data_options):
    """`data` resolved once for image-text pairs (a command's several uses of
    it share the source)."""
    from keras_sparse_moe.data import resolve_dataset

    return _image_text(data, data_options, resolve_dataset, image_text=True)


def _image_text(data, data_options, function, **arguments):
    """`function(data, **arguments, **data_options)`, its errors reworded
    for image-text pairs (after the check of `data_options`, which keeps
    its own message)."""
    options = check_data_options(data_options)
    try:
        return function(data, **arguments, **options)
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"Dataset {data!r} cannot be used to train a dual encoder: it needs image-caption "
            "pairs (captions from the data or class names for caption templates). "
            f"{error}") from error


def _missing_split(data, split):
    return (f"Dataset {data!r} has no {split!r} split with these options (too few images per "
            "class to carve one out); give it more images, or train/ and test/ sub-folders.")


def _to_pairs(ds):
    """`{"images","captions","labels"}` -> `({"images","prompts"}, targets)`."""
    import tensorflow as tf

    def pair(batch):
        x = {"images": batch["images"], "prompts": batch["captions"]}
        if "labels" not in batch:
            return x
        labels = batch["labels"]
        same = tf.cast(tf.equal(labels[:, None], labels[None, :]), "float32")
        return x, same / tf.reduce_sum(same, axis=1, keepdims=True)

    return ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE)


def _check_has_captions(ds, data):
    spec = ds.element_spec
    if not isinstance(spec, dict) or "captions" not in spec:
        raise ValueError(
            f"Dataset {data!r} yields no captions, so a dual encoder cannot be trained on it. "
            "Use a dataset with captions or class names (e.g. 'digits', 'folder:PATH' with "
            "captions.tsv)."
        )


def _tower_inputs(model, ds, convert=True):
    """`(images, batch)` of each batch of `ds`: its images as float32 NumPy,
    through the model's image converter when `convert`."""
    converter = model.preprocessor.image_converter if model.preprocessor else None
    for batch in ds:
        images = batch["images"]
        if converter is not None and convert:
            images = converter(images)
        yield np.asarray(images, "float32"), batch


def _encode_images(model, ds):
    """L2-normalised image embeddings and labels of a labelled dataset."""
    embeddings, labels = [], []
    for images, batch in _tower_inputs(model, ds):
        embeddings.append(
            np.asarray(model.backbone.image_encoder.predict(images, batch_size=len(images), verbose=0))
        )
        labels.append(np.asarray(batch["labels"]))
    embeddings = np.concatenate(embeddings).astype("float32")
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return embeddings, np.concatenate(labels)


def representative_tower_images(model, data="digits", samples=256, seed=0, data_options=None,
                                raw_shape=None):
    """Training images of `data` for int8 calibration of the image tower of
    a dual encoder, as `representative_images` gives them for a classifier:
    preprocessed images (the image converter's output), or with `raw_shape`
    raw images of that `(height, width, channels)`, for a tower that
    includes the preprocessing (the model's own image shape: raw images at
    its size). `data_options`: more dataset options, as in
    `evaluate_zero_shot`.
    """
    model = load_dual_encoder(model)
    samples = check_int("samples", samples, minimum=1)
    raw_shape = check_raw_image_shape(raw_shape, name="raw_shape")
    train, _, _, _ = _datasets(model, data, 64, False, seed, training=False,
                               data_options=data_options, image_shape=raw_shape)
    images, total = [], 0
    for batch_images, _ in _tower_inputs(model, train, convert=raw_shape is None):
        images.append(batch_images)
        total += len(images[-1])
        if total >= samples:
            break
    return np.concatenate(images)[:samples]


def evaluate_zero_shot(model_or_path, data="digits", templates=None, split="test", batch_size=128,
                       data_options=None):
    """Zero-shot classification accuracy from text prompts only.

    Args:
        model_or_path: a `MoEDualEncoderContrastive`, a preset name or
            directory, or a `.keras` file.
        data: dataset spec with class names (e.g. `"digits"`).
        templates: prompt templates (default: the dataset's prompt templates,
            for digits "a handwritten digit {word}", "a photo of the number
            {digit}", ...); all templates of a class are averaged.
        split: `"test"`, `"validation"` or `"train"`.
        batch_size: evaluation batch size.
        data_options: None or a dict of more dataset options, e.g.
            `{"data_dir": "...", "download": False}` for a `tfds:` dataset.

    Returns:
        dict with `zero_shot_accuracy`, `per_class_accuracy`, `macro_f1`,
        `per_class` (precision / recall / F1 / support per class),
        `confusion_matrix`, `latency_ms_per_image` (image tower, batched),
        `num_examples`, `num_templates`, `split`.

    Example:
    >>> m = evaluate_zero_shot("limoe_tiny_digits", "digits")
    >>> round(m["zero_shot_accuracy"], 3), m["num_examples"]
    (0.928, 359)
    """
    from keras_sparse_moe.recipes.metrics import classification_report

    check_int("batch_size", batch_size, minimum=1)
    model = load_dual_encoder(model_or_path)
    train, validation, test, info = _datasets(model, data, batch_size, False, 0, training=False,
                                              data_options=data_options)
    splits = {"train": train, "validation": validation, "test": test}
    if split not in splits:
        raise ValueError(f"Argument `split` must be 'train', 'validation' or 'test'; received {split!r}.")
    ds = splits[split]
    if ds is None:
        raise ValueError(_missing_split(data, split))
    _check_has_captions(ds, data)
    if "labels" not in ds.element_spec:
        raise ValueError(f"Dataset {data!r} has no labels, so zero-shot accuracy cannot be measured.")
    prompts = info.zero_shot_prompts(templates)
    table = class_text_embeddings(model, prompts)
    _encode_images(model, ds.take(1))  # warm up (tracing) before timing
    start = time.perf_counter()
    images, labels = _encode_images(model, ds)
    seconds = time.perf_counter() - start
    predictions = np.argmax(images @ table.T, axis=-1)
    num_classes = len(info.class_names)
    names = [str(n) for n in info.class_names]
    report = classification_report(labels, predictions, num_classes, names)
    per_class = {
        names[c]: float(np.mean(predictions[labels == c] == c))
        for c in range(num_classes)
        if np.any(labels == c)
    }
    return {
        "zero_shot_accuracy": float(np.mean(predictions == labels)),
        "per_class_accuracy": per_class,
        "macro_f1": report["macro_f1"],
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "latency_ms_per_image": seconds / max(len(labels), 1) * 1e3,
        "num_examples": int(len(labels)),
        "num_templates": int(len(prompts[0])),
        "split": split,
    }


def image_routing_by_class(model, data="digits", split="test", max_images=512, data_options=None):
    """`routing_by_class` of the image tokens of a dual encoder (its image
    tower run on preprocessed images of `data`), for the routing heatmap."""
    from keras_sparse_moe.recipes.routing import routing_by_class

    model = load_dual_encoder(model)
    train, validation, test, info = _datasets(model, data, 64, False, 0, training=False,
                                              data_options=data_options)
    ds = {"train": train, "validation": validation, "test": test}[split]
    images, labels = [], []
    for batch_images, batch in _tower_inputs(model, ds):
        images.append(batch_images)
        labels.append(np.asarray(batch["labels"]))
        if sum(len(x) for x in images) >= max_images:
            break
    images = np.concatenate(images)[:max_images]
    labels = np.concatenate(labels)[:max_images]
    routing = routing_by_class(model.backbone.image_encoder, images, labels,
                               len(info.class_names))
    return routing, [str(n) for n in info.class_names]


@exclusive_run
def train_dual_encoder(
    preset=DEFAULT_PRESET,
    data="digits",
    output_dir="runs/dual_encoder",
    config=None,
    *,
    templates=None,
    save=True,
    callbacks=(),
    overwrite=False,
    verbose=2,
    plots=True,
    data_options=None,
    run_eagerly=False,
):
    """Train a dual encoder contrastively, then measure zero-shot accuracy
    (`train` calls this for dual encoders).

    The run resumes, completes (with `save=True`, which keeps the trained
    model in `model.keras`) or returns an earlier run in `output_dir` as
    `TrainingRun` says; a run with different settings there is refused.
    It holds `output_dir` (`run.lock`) while it lasts: a second run into
    the same directory fails at once (`RunDirectoryLocked`, naming the
    holder's PID and host).

    Args:
        preset: preset name or directory, `.keras` file or model
            (default `"limoe_tiny"`).
        data: dataset spec yielding image-caption pairs (`"digits"` makes
            captions from the class names).
        output_dir: where checkpoints, logs and the final model go.
        config: a `TrainingConfig` (None: the defaults). `batch_size` must be
            >= 2 (a contrastive batch needs negatives); `augment` other than
            `"none"` shifts the training images at random; `label_smoothing`
            does not apply.
        templates: zero-shot prompt templates (default: the dataset's).
        save: write `model.keras` and `preset/`.
        callbacks: more Keras callbacks for `fit` (after the recipe's own).
        overwrite: delete an earlier run's files in `output_dir` (only
            those) and train afresh.
        verbose: `fit` verbosity.
        plots: write the PNG figures: `training_curves.png` (loss and
            routing statistics per epoch) and `routing_heatmap.png` (per MoE
            layer of the image tower, the share of each class's image tokens
            sent to each expert, on the test split).
        data_options: None or a dict of more dataset options, e.g.
            `{"data_dir": "...", "download": False}` for a `tfds:` dataset
            (recorded in `run.json`; not part of the resume check).
        run_eagerly: run `fit` and the evaluation step by step without
            compiling a graph (faster for a few steps, e.g. smoke tests;
            not part of the resume check).

    Returns:
        dict of metrics: `zero_shot_accuracy` (test split; None for data without
        class labels, e.g. a captioned folder), `final_loss`,
        `initial_loss`, `history` (per-epoch metrics of every epoch, read
        from `log.csv`, so a resumed run's history includes the epochs before
        the interruption), `train_seconds`, `epochs`, `figures` (paths of
        the PNG files written), ...

    Example:
    >>> from keras_sparse_moe.recipes.config import TrainingConfig
    >>> metrics = train_dual_encoder("limoe_tiny", "digits", "/tmp/limoe",
    ...                              TrainingConfig(epochs=1))  # doctest: +SKIP
    """
    import keras

    from keras_sparse_moe.recipes.config import check_config
    from keras_sparse_moe.recipes.training import read_log

    config = check_config(config)
    batch_size = check_int("batch_size", config.batch_size, minimum=2)
    augment = config.augment != "none"
    settings = {
        "preset": preset if isinstance(preset, str) else type(preset).__name__,
        "data": data, **config.to_dict(),
        "templates": None if templates is None else list(templates),
    }
    data_options = check_data_options(data_options)
    if data_options:
        settings["data_options"] = data_options
    run = TrainingRun(output_dir, settings, config, keys=_RESUME_KEYS, logger=logger,
                      overwrite=overwrite, save=save)
    output_dir = run.output_dir
    if run.state == "finished":
        return run.previous_metrics()

    model = load_dual_encoder(preset)
    # Resolved once: training, the zero-shot evaluation and the routing plot share it.
    source = _resolve(data, {"validation_fraction": config.validation_fraction, **data_options})
    train, validation, test, info = _datasets(model, source, batch_size, augment, config.seed)
    labelled = bool(info.num_classes)
    if labelled and test is None:  # the zero-shot evaluation after training needs it
        raise ValueError(_missing_split(data, "test"))
    if not labelled:
        logger.warning("Dataset %s has captions but no class labels: the model is trained and "
                       "saved, without a zero-shot accuracy (that needs labelled test images).",
                       data)
    _check_has_captions(train, data)
    train_pairs = _to_pairs(train)
    run.compile(model, run.steps_per_epoch(train_pairs, info.counts.get("train")), _NO_DECAY,
                run_eagerly=bool(run_eagerly))
    val_pairs = None
    if validation is not None and info.counts.get("validation", 0) >= batch_size:
        val_pairs = _to_pairs(validation)
    train_pairs, val_pairs = run.limit(train_pairs, val_pairs)

    def fit():
        initial_loss = float(model.evaluate(train_pairs, verbose=0, return_dict=True)["loss"])
        _, train_seconds = run.fit(model, train_pairs, val_pairs, callbacks=callbacks,
                                   verbose=verbose)
        return {"initial_loss": initial_loss, "train_seconds": train_seconds}

    fit_record = run.train(model, fit)
    evaluation = run.stage("evaluation", lambda: {
        "final_loss": float(model.evaluate(train_pairs, verbose=0, return_dict=True)["loss"]),
        "zero_shot": evaluate_zero_shot(model, source, templates=templates, split="test")
        if labelled else {"zero_shot_accuracy": None},
    })
    metrics = {
        "preset": settings["preset"],
        "data": data,
        "epochs": config.epochs,
        "batch_size": batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "backend": keras.backend.backend(),
        "parameters": int(model.count_params()),
        "initial_loss": fit_record["initial_loss"],
        "final_loss": evaluation["final_loss"],
        "train_seconds": fit_record["train_seconds"],
        "history": read_log(os.path.join(output_dir, LOG_FILE)),
        **evaluation["zero_shot"],
    }
    if save:
        run.save_preset(model)
    metrics["figures"] = []
    if plots:
        from keras_sparse_moe.recipes.plots import plot_run

        routing, names = (image_routing_by_class(model, source)
                          if labelled else ({}, []))
        metrics["figures"] = list(plot_run(
            output_dir, routing, names, title=settings["preset"],
            heatmap_title=f"{settings['preset']}: image tokens per class and expert").values())
    run.finish(metrics)
    return metrics
