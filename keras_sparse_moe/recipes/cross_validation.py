"""K-fold cross-validation of a classifier recipe on the digits training split.

The digits test split (359 images) is too small to choose between recipes
(one image is 0.28 points, about the seed-to-seed spread of a run) and must
not be used to choose at all; the default validation split (144 images) is
smaller still. `cross_validate_classifier` trains a recipe once per fold,
each fold holding out one of `folds` contiguous blocks of the 1,438 training
samples (`load_digits(validation_fold=(k, n))`), and pools the held-out
predictions: every training image is predicted once by a model that never
saw it, so two recipes are compared on 1,438 images, paired image by image.
No model is evaluated on the test split (`train_classifier(evaluation_split=
"validation")`).

Example (5 folds of the shipped recipe, about 20 minutes on 2 CPU cores):

    from keras_sparse_moe.recipes.classifier import DIGITS_RECIPE
    from keras_sparse_moe.recipes.cross_validation import cross_validate_classifier

    recipe = {k: v for k, v in DIGITS_RECIPE.items() if k != "validation_fraction"}
    summary = cross_validate_classifier("moe_vit_tiny", "runs/cv/baseline", **recipe)
    print(summary["accuracy"], summary["fold_accuracies"])
"""

import json
import logging
import os

import numpy as np

from keras_sparse_moe.utils.io import atomic_write_text
from keras_sparse_moe.utils.validation import check_int

logger = logging.getLogger("keras_sparse_moe.recipes")

SUMMARY_FILE = "cv_summary.json"
_FIXED = ("data", "output_dir", "evaluation_split", "validation_fraction", "return_model")


def cross_validate_classifier(preset, output_dir, *, folds=5, data="digits", seed=0,
                              label=None, **recipe):
    """Cross-validate a `train_classifier` recipe on the digits training split.

    Fold `k` trains on the training samples outside block `k` (of `folds`
    contiguous blocks) and predicts block `k`; its run lives in
    `output_dir/fold_k` (re-running resumes or reuses finished folds). The
    summary is also written to `output_dir/cv_summary.json`.

    Args:
        preset: preset name, preset directory or `.keras` file (as in
            `train_classifier`).
        output_dir: parent directory of the fold runs.
        folds: int in [2, 1438], number of folds.
        data: `"digits"` (the only dataset with fixed cross-validation
            blocks).
        seed: int >= 0, the same for every fold.
        label: name of the recipe in the summary (default: `preset`).
        **recipe: other `train_classifier` arguments (epochs, overrides,
            augment, ...). `data_options` may not set `validation_fold`.
            `teachers` (distillation) may be path templates with `{fold}`,
            e.g. `"runs/cv_a/fold_{fold}/model.keras"`: fold `k` then
            distils the teachers of the same fold, which have not seen its
            held-out block either.

    Returns:
        A dict: `label`, `preset`, `folds`, `seed`, `recipe`, `accuracy`
        (pooled over all held-out images), `correct`, `examples`,
        `fold_accuracies`, `fold_accuracy_mean` / `_std`, and per image
        (in sample order 0..1437) `labels` and `predictions`.

    Example:
    >>> import tempfile
    >>> s = cross_validate_classifier("moe_vit_tiny", tempfile.mkdtemp(), folds=2, epochs=1,
    ...     max_batches=1, verbose=0, overrides={"num_layers": 2, "hidden_dim": 8,
    ...     "mlp_dim": 8, "num_heads": 1})
    >>> s["examples"], len(s["predictions"]), len(s["fold_accuracies"])
    (1438, 1438, 2)
    """
    from keras_sparse_moe.data import parse_spec
    from keras_sparse_moe.data.digits import DIGITS_TEST_START
    from keras_sparse_moe.recipes.classifier import train_classifier

    folds = check_int("folds", folds, minimum=2)
    if folds > DIGITS_TEST_START:
        raise ValueError(f"Argument `folds` must be in [2, {DIGITS_TEST_START}]; received folds={folds}.")
    seed = check_int("seed", seed, minimum=0)
    if parse_spec(data)[0] != "digits":
        raise ValueError(
            f"Cross-validation needs the 'digits' dataset (fixed contiguous folds of its "
            f"training split); received data={data!r}."
        )
    fixed = sorted(set(recipe) & set(_FIXED))
    if fixed:
        raise ValueError(f"Arguments {fixed} are set by cross_validate_classifier; leave them out.")
    data_options = dict(recipe.pop("data_options", None) or {})
    if "validation_fold" in data_options:
        raise ValueError("`data_options` may not set `validation_fold`: each fold sets its own.")
    teachers = recipe.pop("teachers", None)
    if isinstance(teachers, (str, os.PathLike)):
        teachers = [teachers]
    for teacher in teachers or ():
        if not (isinstance(teacher, str) and "{fold}" in teacher):
            logger.warning(
                "Teacher %r is the same for every fold: if it was trained on the digits training "
                "split it has seen the held-out blocks, and the cross-validated accuracy is "
                "optimistic. Give per-fold teachers as templates with '{fold}'.", teacher,
            )
    recipe.setdefault("save_preset", False)
    recipe.setdefault("plots", False)
    recipe.setdefault("routing_examples", 0)
    recipe.setdefault("single_image_latency", False)

    predictions = np.full(DIGITS_TEST_START, -1, np.int64)
    labels = np.full(DIGITS_TEST_START, -1, np.int64)
    fold_accuracies = []
    for k in range(folds):
        fold = [k, folds]  # a list: it round-trips through run.json unchanged
        metrics, model = train_classifier(
            preset, data, fold_directory(output_dir, k), seed=seed,
            data_options={**data_options, "validation_fold": fold},
            evaluation_split="validation", validation_fraction=0.1, return_model=True,
            **recipe, **_fold_teachers(teachers, k),
        )
        index, images, fold_labels = held_out_block(k, folds)
        logits = model.predict(images, batch_size=256, verbose=0)
        predictions[index] = np.argmax(logits, axis=-1)
        labels[index] = fold_labels
        accuracy = float(np.mean(predictions[index] == fold_labels))
        fold_accuracies.append(accuracy)
        logger.info("%s fold %d/%d: validation accuracy %.4f (%d images)", label or preset,
                    k + 1, folds, accuracy, len(index))
    summary = {
        "label": label or preset,
        "preset": os.fspath(preset) if isinstance(preset, (str, os.PathLike)) else "model",
        "data": data,
        "folds": folds,
        "seed": seed,
        "recipe": dict(recipe, **({"teachers": teachers} if teachers else {})),
        **pooled_accuracy(labels, predictions, fold_accuracies),
    }
    write_summary(output_dir, summary)
    return summary


def fold_directory(output_dir, k):
    """The run directory of fold `k` of a cross-validation in `output_dir`."""
    return os.path.join(output_dir, f"fold_{k}")


def held_out_block(k, folds):
    """Block `k` of `folds` contiguous blocks of the digits training split.

    Returns:
        `(index, images, labels)`: the blocks' sample indices (in
        scikit-learn's order), its images as float32 and its labels.

    Example:
    >>> index, images, labels = held_out_block(1, 2)
    >>> int(index[0]), images.shape, images.dtype.name, len(labels)
    (719, (719, 8, 8, 1), 'float32', 719)
    """
    from keras_sparse_moe.data import digits_split_indices
    from keras_sparse_moe.data import load_digits

    fold = (k, folds)
    images, labels = load_digits("validation", validation_fold=fold)
    index = digits_split_indices(validation_fold=fold)["validation"]
    return index, images.astype("float32"), labels


def pooled_accuracy(labels, predictions, fold_accuracies):
    """The accuracy entries of a cross-validation summary: `accuracy`,
    `correct`, `examples`, `fold_accuracies`, `fold_accuracy_mean` / `_std`,
    `labels` and `predictions` (lists, in sample order).

    Example:
    >>> r = pooled_accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), [1.0, 0.5])
    >>> r["accuracy"], r["correct"], r["fold_accuracy_mean"]
    (0.75, 3, 0.75)
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    correct = int(np.sum(predictions == labels))
    return {
        "accuracy": correct / len(labels),
        "correct": correct,
        "examples": int(len(labels)),
        "fold_accuracies": [float(a) for a in fold_accuracies],
        "fold_accuracy_mean": float(np.mean(fold_accuracies)),
        "fold_accuracy_std": float(np.std(fold_accuracies, ddof=1)),
        "labels": labels.tolist(),
        "predictions": predictions.tolist(),
    }


def write_summary(output_dir, summary):
    """Write `summary` to `output_dir/cv_summary.json` atomically."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, SUMMARY_FILE),
                      json.dumps(summary, indent=1, default=str) + "\n")


def _fold_teachers(teachers, k):
    """`{"teachers": [...]}` for fold `k` (templates filled in), or `{}`."""
    if not teachers:
        return {}
    return {"teachers": [t.format(fold=k) if isinstance(t, str) else t for t in teachers]}


def paired_comparison(summary_a, summary_b):
    """Compare two cross-validation summaries image by image.

    Args:
        summary_a, summary_b: dicts returned by `cross_validate_classifier`
            (or read from `cv_summary.json`) over the same folds.

    Returns:
        A dict: `accuracy_a`, `accuracy_b`, `only_a` (images only A gets
        right), `only_b`, and `p_value` of the exact two-sided McNemar test
        (binomial test of `only_a` against `only_a + only_b` at 0.5).

    Example:
    >>> a = {"labels": [0, 1, 2, 3], "predictions": [0, 1, 2, 0], "folds": 2}
    >>> b = {"labels": [0, 1, 2, 3], "predictions": [0, 0, 0, 3], "folds": 2}
    >>> r = paired_comparison(a, b)
    >>> r["accuracy_a"], r["accuracy_b"], r["only_a"], r["only_b"], round(r["p_value"], 3)
    (0.75, 0.5, 2, 1, 1.0)
    """
    import math

    for name, s in (("summary_a", summary_a), ("summary_b", summary_b)):
        if not isinstance(s, dict) or "predictions" not in s or "labels" not in s:
            raise ValueError(f"Argument `{name}` must be a cross-validation summary with "
                             "'labels' and 'predictions'.")
    labels = np.asarray(summary_a["labels"])
    if summary_a.get("folds") != summary_b.get("folds") or not np.array_equal(
        labels, np.asarray(summary_b["labels"])
    ):
        raise ValueError("The two summaries do not cover the same folds and images.")
    right_a = np.asarray(summary_a["predictions"]) == labels
    right_b = np.asarray(summary_b["predictions"]) == labels
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(right_b & ~right_a))
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    return {
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": min(1.0, 2 * tail),
    }
