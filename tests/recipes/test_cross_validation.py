"""Cross-validation of a classifier recipe on the digits training split."""

import json
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.data import load_digits
from keras_sparse_moe.recipes.cross_validation import cross_validate_classifier
from keras_sparse_moe.recipes.cross_validation import paired_comparison

TINY = {"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2}
QUICK = dict(overrides=TINY, epochs=1, max_batches=2, batch_size=32, verbose=0,
             run_eagerly=keras.backend.backend() != "jax")


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cv"))
    return out, cross_validate_classifier("moe_vit_tiny", out, folds=2, seed=1, **QUICK)


def test_every_training_image_is_predicted_once_by_a_model_that_never_saw_it(two_folds):
    out, summary = two_folds
    _, labels = load_digits("train", validation_fraction=0.0)
    assert summary["examples"] == 1438 and len(summary["predictions"]) == 1438
    np.testing.assert_array_equal(summary["labels"], labels)
    assert min(summary["predictions"]) >= 0  # every image got a prediction
    predictions = np.asarray(summary["predictions"])
    assert summary["correct"] == int(np.sum(predictions == labels))
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 1438)
    blocks = [(0, 719), (719, 1438)]
    for k, (start, stop) in enumerate(blocks):
        run = json.load(open(os.path.join(out, f"fold_{k}", "run.json")))
        assert run["settings"]["data_options"] == {"validation_fold": [k, 2]}
        assert run["settings"]["evaluation_split"] == "validation"
        metrics = json.load(open(os.path.join(out, f"fold_{k}", "metrics.json")))
        # The fold's final metrics are those of its held-out block, not of the test split.
        assert metrics["split"] == "validation" and metrics["dataset"]["counts"]["validation"] == stop - start
        fold_accuracy = float(np.mean(predictions[start:stop] == labels[start:stop]))
        assert summary["fold_accuracies"][k] == pytest.approx(fold_accuracy)
    saved = json.load(open(os.path.join(out, "cv_summary.json")))
    assert saved["predictions"] == summary["predictions"] and saved["folds"] == 2


def test_rerun_reuses_the_finished_folds(two_folds):
    out, summary = two_folds
    again = cross_validate_classifier("moe_vit_tiny", out, folds=2, seed=1, **QUICK)
    assert again["predictions"] == summary["predictions"]


def test_each_fold_distils_the_teachers_of_the_same_fold(two_folds, tmp_path):
    out, _ = two_folds
    template = os.path.join(out, "fold_{fold}", "model.keras")
    summary = cross_validate_classifier("moe_vit_tiny", str(tmp_path), folds=2, seed=2,
                                        teachers=[template], **QUICK)
    assert summary["recipe"]["teachers"] == [template]
    for k in range(2):
        run = json.load(open(os.path.join(tmp_path, f"fold_{k}", "run.json")))
        assert run["settings"]["distillation"]["teachers"] == [template.format(fold=k)]


def test_paired_comparison_is_an_exact_mcnemar_test():
    labels = np.zeros(100, int)
    a = {"folds": 5, "labels": labels.tolist(), "predictions": labels.tolist()}
    b_predictions = labels.copy()
    b_predictions[:9] = 1  # b gets 9 images wrong that a gets right ...
    a_predictions = labels.copy()
    a_predictions[9:10] = 1  # ... and a gets 1 wrong that b gets right
    a["predictions"] = a_predictions.tolist()
    b = {"folds": 5, "labels": labels.tolist(), "predictions": b_predictions.tolist()}
    result = paired_comparison(a, b)
    assert (result["only_a"], result["only_b"]) == (9, 1)
    # Two-sided exact binomial test of 1 success in 10 at p = 0.5: 22 / 1024.
    assert result["p_value"] == pytest.approx(2 * (1 + 10) / 2**10)
    assert paired_comparison(a, a) == {"accuracy_a": 0.99, "accuracy_b": 0.99, "only_a": 0,
                                       "only_b": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same folds"):
        paired_comparison(a, dict(b, folds=3))
    with pytest.raises(ValueError, match="summary_b"):
        paired_comparison(a, {"accuracy": 0.9})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"folds": 1}, "folds"),
        ({"folds": 1439}, "folds"),
        ({"data": "tfds:mnist"}, "digits"),
        ({"evaluation_split": "test"}, "set by cross_validate_classifier"),
        ({"data_options": {"validation_fold": [0, 5]}}, "validation_fold"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cross_validate_classifier("moe_vit_tiny", str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_evaluation_split_validation_needs_a_validation_split(tmp_path):
    from keras_sparse_moe.recipes.classifier import train_classifier

    with pytest.raises(ValueError, match="evaluation_split"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path), evaluation_split="train")
    with pytest.raises(ValueError, match="no validation split"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "run"), evaluation_split="validation",
                         validation_fraction=0.0, **QUICK)
