"""Model soups: one classifier whose weights are the mean of several fine-tunes.

Wortsman et al. (2022, "Model soups") average the weights of models
fine-tuned from the same pretrained weights with different seeds or
settings. The fine-tunes stay in one basin of the loss, so the average is a
single model of the same size and inference cost that is usually at least as
accurate as its ingredients, and steadier from run to run. For a sparse MoE
this needs the experts of all ingredients to be aligned, which they are when
every ingredient starts from the same pretrained experts and router (soups of
independently initialised models are meaningless: their experts and hidden
units are permuted against each other).

- `uniform_soup(models)`: the element-wise mean of the weights of several
  classifiers of one architecture.
- `interpolate_weights(start, end, alpha)`: `(1 - alpha) * start + alpha *
  end`, weight by weight; with a pretrained `start` and its fine-tune `end`
  this is WiSE-FT (Wortsman et al. 2022), which keeps some of the pretrained
  weights for robustness to shifted data.
- `cross_validate_soup(cv_dirs)`: the soup of several cross-validation runs
  of one recipe with different seeds (`cross_validate_classifier`), fold by
  fold, scored on each fold's held-out block; the summary has the format of
  `cross_validate_classifier`'s, so `paired_comparison` compares it with any
  other recipe.
"""

import json
import logging
import os

import numpy as np

logger = logging.getLogger("keras_sparse_moe.recipes")


def _without_names(config):
    """`config` with every "name" entry dropped (names differ between copies)."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


def uniform_soup(models):
    """A classifier whose weights are the element-wise mean of `models`' weights.

    The ingredients must share one architecture and preprocessing (the same
    preset configuration) and should be fine-tuned from the same pretrained
    weights. The soup is a new copy of the first ingredient (its
    configuration, preprocessing and class count) with the averaged weights;
    the ingredients are not changed.

    Args:
        models: a list of at least two classifiers, `.keras` files or preset
            directories (anything `load_classifier` accepts).

    Returns:
        The soup, a `keras_hub.models.ImageClassifier`.

    Raises:
        ValueError: fewer than two models, or models of different
            architectures, preprocessing or weight shapes.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.recipes.classifier import load_classifier
    >>> a = load_classifier("moe_vit_tiny", num_classes=3)
    >>> b = load_classifier("moe_vit_tiny", num_classes=3)
    >>> soup = uniform_soup([a, b])
    >>> w = [(x + y) / 2 for x, y in zip(a.get_weights(), b.get_weights())]
    >>> all(np.allclose(s, m) for s, m in zip(soup.get_weights(), w))
    True
    """
    if isinstance(models, (str, os.PathLike)) or not hasattr(models, "__len__"):
        raise ValueError(
            "Argument `models` must be a list of at least two classifiers, .keras files or "
            f"preset directories; received {models!r}."
        )
    if len(models) < 2:
        raise ValueError(
            f"Argument `models` must hold at least two models to average; received {len(models)}."
        )
    loaded = _load_aligned(models, [f"model {i} of `models`" for i in range(len(models))])
    return _weighted_copy(loaded, [1.0 / len(loaded)] * len(loaded))


def interpolate_weights(start, end, alpha):
    """A classifier whose weights are `(1 - alpha) * start + alpha * end`.

    With `start` the pretrained model and `end` a fine-tune of it this is
    WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"):
    `alpha = 1` is the fine-tune, smaller values keep more of the pretrained
    weights, which can make the model more robust to a shift of the data.
    Both models must share one architecture, preprocessing and class count
    (the head is interpolated too); neither is changed.

    Args:
        start: the classifier at `alpha = 0` (a model, `.keras` file or preset
            directory: anything `load_classifier` accepts).
        end: the classifier at `alpha = 1`, fine-tuned from `start`.
        alpha: a float in [0, 1], the share of `end`.

    Returns:
        A new `keras_hub.models.ImageClassifier` (built from `start`'s
        configuration, so compiled with the task's defaults; no optimizer state).

    Raises:
        ValueError: for an `alpha` outside [0, 1], and for two models that
            differ in architecture, preprocessing or weight shapes.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.recipes.classifier import load_classifier
    >>> pretrained = load_classifier("moe_vit_tiny", num_classes=3)
    >>> fine_tuned = load_classifier("moe_vit_tiny", num_classes=3)
    >>> wise = interpolate_weights(pretrained, fine_tuned, alpha=0.25)
    >>> head = [m.get_weights()[-2] for m in (pretrained, fine_tuned, wise)]
    >>> bool(np.allclose(head[2], 0.75 * head[0] + 0.25 * head[1], atol=1e-6))
    True
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(
            f"Argument `alpha` must be a number in [0, 1] (the share of `end`); received {alpha!r}."
        )
    loaded = _load_aligned([start, end], ["`start`", "`end`"])
    alpha = float(alpha)
    return _weighted_copy(loaded, [1.0 - alpha, alpha])


def _load_aligned(models, names):
    """Load `models` and check that they share one architecture and weight shapes.

    `names` name each model in the error messages (e.g. "model 1 of `models`").
    """
    from keras_sparse_moe.recipes.classifier import load_classifier

    loaded = [load_classifier(m) for m in models]
    first = loaded[0]
    reference = _without_names(first.get_config())
    shapes = [tuple(w.shape) for w in first.weights]
    for i, model in enumerate(loaded[1:], start=1):
        if type(model) is not type(first) or _without_names(model.get_config()) != reference:
            raise ValueError(
                f"{names[i][0].upper()}{names[i][1:]} ({_describe(models[i])}) has a different "
                f"architecture or preprocessing from {names[0]} ({_describe(models[0])}): "
                "weights can only be averaged between models of one preset configuration, "
                "fine-tuned from the same weights."
            )
        other = [tuple(w.shape) for w in model.weights]
        if other != shapes:
            raise ValueError(
                f"{names[i][0].upper()}{names[i][1:]} ({_describe(models[i])}) has weights of "
                f"other shapes than {names[0]}: weights can only be averaged between models of "
                "one architecture."
            )
    return loaded


def _weighted_copy(loaded, coefficients):
    """A fresh copy of `loaded[0]` whose weights are the `coefficients`-weighted sum."""
    first = loaded[0]
    copy = type(first).from_config(first.get_config())
    values = [m.get_weights() for m in loaded]
    combined = []
    for index, value in enumerate(values[0]):
        if np.issubdtype(value.dtype, np.floating):
            total = sum(c * v[index].astype("float64") for c, v in zip(coefficients, values))
            combined.append(np.asarray(total).astype(value.dtype))
        else:  # integer state (none in the shipped models): the first model's
            combined.append(value)
    copy.set_weights(combined)
    return copy


def _describe(model):
    if isinstance(model, (str, os.PathLike)):
        return repr(os.fspath(model))
    return getattr(model, "name", type(model).__name__)


def cross_validate_soup(cv_dirs, output_dir=None, label=None):
    """Score the uniform soup of several cross-validation runs, fold by fold.

    Each directory of `cv_dirs` is the output of one
    `cross_validate_classifier` run of the same recipe and folds (usually
    with different seeds): it holds `cv_summary.json` and `fold_k/model.keras`.
    Fold `k`'s soup averages the `fold_k` models of all runs, none of which
    saw block `k`, and predicts that block.

    Args:
        cv_dirs: list of at least two cross-validation output directories.
        output_dir: None, or a directory to write `cv_summary.json` into.
        label: name of the soup in the summary (default: the first run's
            label plus "soup of N").

    Returns:
        A dict in the format of `cross_validate_classifier`'s summary
        (`accuracy`, `correct`, `examples`, `fold_accuracies`, `labels`,
        `predictions`, ...) plus `ingredients` (per run: directory, seed,
        pooled accuracy), `ingredient_accuracy_mean` and
        `ensemble_accuracy` (mean softmax of the same fold models: what
        averaging predictions instead of weights gives, at N times the
        inference cost).

    Example:
    >>> # cross_validate_soup(["runs/cv/cv5_seed_0", "runs/cv/cv5_seed_1"], "runs/cv/cv5_soup")
    """
    import keras

    from keras_sparse_moe.data.digits import DIGITS_TEST_START
    from keras_sparse_moe.recipes.classifier import load_classifier
    from keras_sparse_moe.recipes.cross_validation import SUMMARY_FILE
    from keras_sparse_moe.recipes.cross_validation import fold_directory
    from keras_sparse_moe.recipes.cross_validation import held_out_block
    from keras_sparse_moe.recipes.cross_validation import pooled_accuracy
    from keras_sparse_moe.recipes.cross_validation import write_summary
    from keras_sparse_moe.recipes.run_state import MODEL_FILE

    if (isinstance(cv_dirs, (str, os.PathLike)) or not hasattr(cv_dirs, "__len__")
            or len(cv_dirs) < 2):
        raise ValueError(
            "Argument `cv_dirs` must be a list of at least two cross-validation directories "
            f"(each holding {SUMMARY_FILE}); received {cv_dirs!r}."
        )
    summaries = []
    for directory in cv_dirs:
        path = os.path.join(directory, SUMMARY_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                summaries.append(json.load(handle))
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{os.fspath(directory)!r} is not a finished cross-validation run: cannot read "
                f"{path} ({error})."
            ) from None
    folds = summaries[0].get("folds")
    if any(s.get("folds") != folds for s in summaries) or any(
        s.get("labels") != summaries[0].get("labels") for s in summaries
    ):
        raise ValueError(
            "The runs of `cv_dirs` do not share the same folds and images: "
            f"folds {[s.get('folds') for s in summaries]}."
        )
    predictions = np.full(DIGITS_TEST_START, -1, np.int64)
    ensemble = np.full(DIGITS_TEST_START, -1, np.int64)
    labels = np.full(DIGITS_TEST_START, -1, np.int64)
    fold_accuracies = []
    for k in range(folds):
        files = [os.path.join(fold_directory(d, k), MODEL_FILE) for d in cv_dirs]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"Missing fold model(s) {missing}: finish those runs first.")
        models = [load_classifier(f) for f in files]
        soup = uniform_soup(models)
        index, images, fold_labels = held_out_block(k, folds)
        predictions[index] = np.argmax(soup.predict(images, batch_size=256, verbose=0), axis=-1)
        probabilities = [
            keras.ops.convert_to_numpy(keras.ops.softmax(
                keras.ops.convert_to_tensor(m.predict(images, batch_size=256, verbose=0)), axis=-1))
            for m in models
        ]
        ensemble[index] = np.argmax(np.mean(probabilities, axis=0), axis=-1)
        labels[index] = fold_labels
        fold_accuracies.append(float(np.mean(predictions[index] == fold_labels)))
        logger.info("soup fold %d/%d: held-out accuracy %.4f (%d images)", k + 1, folds,
                    fold_accuracies[-1], len(index))
    ingredients = [{"directory": os.fspath(d), "seed": s.get("seed"), "accuracy": s.get("accuracy")}
                   for d, s in zip(cv_dirs, summaries)]
    summary = {
        "label": label or f"{summaries[0].get('label')} soup of {len(cv_dirs)}",
        "preset": summaries[0].get("preset"),
        "data": summaries[0].get("data"),
        "folds": folds,
        "seed": [s.get("seed") for s in summaries],
        "recipe": summaries[0].get("recipe"),
        **pooled_accuracy(labels, predictions, fold_accuracies),
        "ingredients": ingredients,
        "ingredient_accuracy_mean": float(np.mean([i["accuracy"] for i in ingredients])),
        "ensemble_accuracy": float(np.mean(ensemble == labels)),
    }
    if output_dir is not None:
        write_summary(output_dir, summary)
    return summary
