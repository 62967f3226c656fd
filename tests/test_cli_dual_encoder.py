"""`keras-sparse-moe train / evaluate / export` with a dual encoder (LIMoE):
contrastive training with its artifacts, zero-shot evaluation of the shipped
`limoe_tiny_digits`, export of both towers.

These test the commands, once each: training and evaluation under PyTorch
(the recipes they call are tested on every backend in
tests/recipes/test_dual_encoder.py), the tower exports under TensorFlow, where
they run in-process (tests/export/test_towers.py covers the other backends)."""

import json
import os
import sys

import numpy as np
import pytest

from keras_sparse_moe.cli import main

# Training runs eagerly (a few batches: tracing would cost more).
EAGER = ["--run-eagerly"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_limoe_preset):
    # limoe_tiny shrunk (tests/conftest.py): the same command at a fraction of the cost.
    out = str(tmp_path_factory.mktemp("limoe_run"))
    code = main(["train", "--preset", small_limoe_preset, "--data", "digits", "--output", out,
                 "--epochs", "1", "--batch-size", "16", "--max-batches", "2", "--quiet", *EAGER])
    return code, out


@pytest.mark.single_backend("torch")
def test_train_writes_artifacts(trained):
    code, out = trained
    assert code == 0
    for name in ("model.keras", "metrics.json", "log.csv", "training_curves.png",
                 "routing_heatmap.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.isfile(os.path.join(out, "preset", "config.json"))
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_examples"] == 359  # zero-shot on the whole test split
    confusion = np.asarray(metrics["confusion_matrix"])
    assert metrics["zero_shot_accuracy"] == pytest.approx(np.trace(confusion) / 359)
    assert len(metrics["per_class"]) == 10


@pytest.mark.single_backend("torch")
def test_evaluate_shipped_preset_zero_shot(capsys, tmp_path):
    assert main(["evaluate", "--model", "limoe_tiny_digits", "--data", "digits",
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "zero-shot accuracy" in out and "0.9276" in out
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["zero_shot_accuracy"] >= 0.90
    assert metrics["macro_f1"] > 0.9 and metrics["latency_ms_per_image"] > 0


@pytest.mark.single_backend("torch")
def test_evaluate_trained_model_file(capsys, trained):
    _, out = trained
    assert main(["evaluate", "--model", os.path.join(out, "model.keras"), "--data", "digits"]) == 0
    assert "zero-shot accuracy" in capsys.readouterr().out


@pytest.mark.single_backend
def test_export_towers_without_the_litert_interpreter(capsys, tmp_path, monkeypatch):
    # As on a platform without ai_edge_litert wheels: the towers are written, not run.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    # Also: the raw-image size and dtype of the image tower from the command line,
    # and a dynamic batch.
    out = tmp_path / "towers"
    assert main(["export", "--model", "limoe_tiny_digits", "--output", str(out),
                 "--data", "digits", "--input-image-shape", "16,16", "--input-dtype",
                 "float32", "--batch-size", "dynamic"]) == 0
    text = capsys.readouterr().out
    assert "not run" in text and "LiteRT zero-shot test accuracy" not in text
    assert {"image_encoder.tflite", "text_encoder.tflite", "class_embeddings.npy"} <= set(
        os.listdir(out))
    with open(out / "export.json") as f:
        manifest = json.load(f)
    image = manifest["image_encoder"]
    assert image["raw_input"] is True and image["preprocessing"]["in_graph"] is True
    assert image["shape"] == [-1, 16, 16, 1] and image["dtype"] == "float32"
    assert manifest["batch_size"] is None
    # int8 calibration runs the interpreter: without it, one line says so.
    assert main(["export", "--model", "limoe_tiny_digits", "--output", str(tmp_path / "q"),
                 "--data", "digits", "--quantization", "int8", "--quiet"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "calibrates on the LiteRT interpreter" in errors[0]
    assert not (tmp_path / "q").exists()


@pytest.mark.single_backend
def test_export_towers_reports_litert_zero_shot(capsys, tmp_path):
    # --no-preprocessing: the image tower takes preprocessed float32 images, which
    # the accuracy check computes from export.json.
    out = tmp_path / "towers"
    assert main(["export", "--model", "limoe_tiny_digits", "--output", str(out),
                 "--data", "digits", "--quantization", "dynamic_int8",
                 "--no-preprocessing"]) == 0
    text = capsys.readouterr().out
    assert "LiteRT zero-shot test accuracy" in text
    # The table wraps long cells at the terminal's width: compare the words.
    cells = " ".join(text.replace("│", " ").split())
    assert "images float32 (1, 8, 8, 1)" in cells
    with open(out / "export.json") as f:
        image = json.load(f)["image_encoder"]
    assert image["raw_input"] is False and image["dtype"] == "float32"
    assert image["preprocessing"]["in_graph"] is False
    assert sorted(os.listdir(out)) == ["class_embeddings.npy", "class_names.json", "export.json",
                                       "image_encoder.tflite", "text_encoder.tflite",
                                       "vocabulary.txt"]


@pytest.mark.single_backend("torch")
def test_rerun_returns_the_finished_run_other_settings_need_overwrite(trained, capsys,
                                                                     small_limoe_preset):
    # Last in this file: it replaces the module's trained run.
    _, out = trained
    argv = ["train", "--preset", small_limoe_preset, "--data", "digits", "--output", out,
            "--batch-size", "16", "--max-batches", "2", "--quiet", *EAGER]
    log = os.path.join(out, "log.csv")
    before = open(log).read()
    capsys.readouterr()
    assert main(argv + ["--epochs", "1"]) == 0  # finished: its metrics, no training
    assert "zero-shot accuracy" in capsys.readouterr().out
    assert open(log).read() == before
    assert main(argv + ["--epochs", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "different settings (epochs: 1 -> 2)" in err[0], err
    with open(os.path.join(out, "notes.txt"), "w") as handle:
        handle.write("not a run file")
    assert main(argv + ["--epochs", "2", "--overwrite"]) == 0
    assert [row.split(",")[0] for row in open(log).read().split()[1:]] == ["0", "1"]
    assert os.path.isfile(os.path.join(out, "notes.txt"))  # only the run's own files go
