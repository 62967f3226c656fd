"""The recipes/moe_vit.py driver: cross-validation, whole-split training, bad flags."""

import json
import os

import numpy as np
import pytest

from keras_sparse_moe.data import load_digits
from keras_sparse_moe.recipes.classifier import load_classifier
from keras_sparse_moe.recipes.vit_recipes import main

TINY = ["--set", "num_layers=2", "--set", "hidden_dim=16", "--set", "mlp_dim=16",
        "--set", "num_heads=2", "--epochs", "1", "--verbose", "0", "--max-batches", "2"]


def test_cross_validation_prints_pooled_accuracy_and_compares(tmp_path, capsys):
    out = str(tmp_path / "cv")
    assert main(["--cv-folds", "2", "--output", out] + TINY) == 0
    summary_path = os.path.join(out, "cv2_seed_0", "cv_summary.json")
    summary = json.load(open(summary_path))
    assert summary["examples"] == 1438 and summary["folds"] == 2
    assert "num_layers=2" in summary["label"]
    printed = capsys.readouterr().out
    assert "cross-validation" in printed and f"/{1438})" in printed
    # Comparing a recipe with itself: no image differs.
    assert main(["--cv-folds", "2", "--output", out, "--compare-cv", summary_path] + TINY) == 0
    assert "0 / 0, p = 1.000" in capsys.readouterr().out


def test_whole_training_split_and_save_preset(tmp_path, capsys):
    out, preset = str(tmp_path / "runs"), str(tmp_path / "preset")
    assert main(["--validation-fraction", "0", "--output", out, "--save-preset", preset,
                 "--augment", "elastic"] + TINY) == 0
    metrics = json.load(open(os.path.join(out, "seed_0", "metrics.json")))
    assert metrics["settings"]["augment"] == "elastic"
    assert "augment=elastic" in json.load(open(os.path.join(out, "summary.json")))["label"]
    assert metrics["dataset"]["counts"]["train"] == 1438
    assert "validation" not in metrics["dataset"]["counts"]
    assert os.path.isfile(os.path.join(preset, "config.json"))
    assert "trained on the whole training split" in capsys.readouterr().out


def test_extra_train_data_joins_the_training_split_only(tmp_path, capsys):
    out = str(tmp_path / "runs")
    assert main(["--validation-fraction", "0", "--extra-train-data", "optdigits-train", "--output", out]
                + TINY) == 0
    metrics = json.load(open(os.path.join(out, "seed_0", "metrics.json")))
    assert metrics["dataset"]["counts"] == {"train": 1438 + 3823, "test": 359}
    assert "optdigits-train train (3823)" in metrics["dataset"]["splits"]["train"]
    assert "trained with optdigits-train" in json.load(open(os.path.join(out, "summary.json")))["label"]
    # Cross-validation: the extra data joins each fold's training part; the
    # held-out blocks are the digits' alone.
    assert main(["--cv-folds", "2", "--extra-train-data", "optdigits-train", "--output", out] + TINY) == 0
    fold = json.load(open(os.path.join(out, "cv2_seed_0", "fold_0", "metrics.json")))
    assert fold["dataset"]["counts"]["train"] == 719 + 3823 and fold["dataset"]["counts"]["validation"] == 719
    assert json.load(open(os.path.join(out, "cv2_seed_0", "cv_summary.json")))["examples"] == 1438


def test_pretrain_then_fine_tune(tmp_path, capsys):
    """--pretrain trains the preset once on other data, and the runs start
    from those weights; a second command reuses the finished pretraining."""
    out = str(tmp_path / "runs")
    argv = ["--pretrain", "synthetic-digits:200", "--pretrain-epochs", "1", "--learning-rate", "5e-4",
            "--output", out] + TINY
    assert main(argv) == 0
    pretrain = json.load(open(os.path.join(out, "pretrain", "metrics.json")))
    assert pretrain["dataset"]["spec"] == "synthetic-digits:200"
    assert pretrain["dataset"]["counts"]["train"] == 200
    run = json.load(open(os.path.join(out, "seed_0", "metrics.json")))
    assert run["settings"]["preset"] == os.path.join(out, "pretrain", "preset")
    assert run["settings"]["learning_rate"] == 5e-4
    assert "pretrained on synthetic-digits:200 (1 epochs)" in json.load(
        open(os.path.join(out, "summary.json")))["label"]
    log = os.path.join(out, "pretrain", "log.csv")
    before = os.path.getmtime(log)
    assert main(argv + ["--cv-folds", "2"]) == 0  # the finished pretraining is reused
    assert os.path.getmtime(log) == before
    assert "pretrained on" in json.load(open(os.path.join(out, "cv2_seed_0", "cv_summary.json")))["label"]


def test_soup_of_seeds_is_evaluated_saved_and_cross_validated(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich tables: one line per row
    out, preset = str(tmp_path / "runs"), str(tmp_path / "preset")
    assert main(["--seeds", "0", "1", "--soup", "--validation-fraction", "0", "--output", out,
                 "--save-preset", preset] + TINY) == 0
    printed = capsys.readouterr().out
    assert "weights of the 2 seeds averaged (soup)" in printed and "saved the soup of 2 seeds" in printed
    metrics = json.load(open(os.path.join(out, "soup", "metrics.json")))
    assert metrics["split"] == "test" and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["ingredients"] == [os.path.join(out, f"seed_{s}", "model.keras") for s in (0, 1)]
    soup = load_classifier(os.path.join(out, "soup", "model.keras"))
    seeds = [load_classifier(os.path.join(out, f"seed_{s}", "model.keras")) for s in (0, 1)]
    for i, value in enumerate(soup.get_weights()):
        np.testing.assert_allclose(value, (seeds[0].get_weights()[i] + seeds[1].get_weights()[i]) / 2,
                                   rtol=1e-6, atol=1e-7)
    images = load_digits("test")[0][:8].astype("float32")
    np.testing.assert_allclose(load_classifier(preset).predict(images, verbose=0),
                               soup.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    # With --cv-folds the soup is cross-validated fold by fold.
    assert main(["--cv-folds", "2", "--seeds", "0", "1", "--soup", "--output", out] + TINY) == 0
    summary = json.load(open(os.path.join(out, "cv2_soup", "cv_summary.json")))
    assert summary["examples"] == 1438 and [i["seed"] for i in summary["ingredients"]] == [0, 1]
    assert "soup" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--cv-folds", "5", "--save-preset", "x"], "cannot be combined"),
        (["--compare-cv", "x.json"], "needs --cv-folds"),
        (["--validation-fraction", "0", "--save-preset", "x", "--seeds", "0", "1"], "give one seed"),
        (["--set", "no_equals_sign"], "KEY=VALUE"),
        (["--augment", "warp"], "invalid choice: 'warp'"),
        (["--cv-folds", "5", "--compare-cv", "missing.json"], "not a readable cv_summary.json"),
        (["--cv-folds", "1"], "`folds` must be"),
        (["--cv-folds", "5", "--data", "tfds:mnist"], "needs the 'digits' dataset"),
        (["--pretrain", "digits"], "pretrain on other data"),
        (["--soup"], "give at least two"),
        (["--soup", "--seeds", "1", "1"], "several different seeds"),
        (["--pretrain", "synthetic-digits:5"], "--pretrain: Dataset spec"),
        (["--pretrain", "synthetic-digits", "--pretrain-epochs", "0"], "--pretrain-epochs must be >= 1"),
        (["--extra-train-data", "optdigit"], "--extra-train-data: Unknown dataset spec 'optdigit'"),
        (["--extra-train-data", "digits"], "as the dataset itself"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, match, capsys):
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2
    assert match in capsys.readouterr().err
