import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.recipes.dual_encoder import evaluate_zero_shot
from keras_sparse_moe.recipes.dual_encoder import load_dual_encoder
from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.dual_encoder import train_dual_encoder
from tests.recipes.interrupt import InterruptAfter

# Training runs eagerly on TensorFlow and PyTorch (no tracing of a train step for a few
# batches); graph-mode training is covered by tests/harness and docs/training.md.
EAGER = keras.backend.backend() != "jax"


def test_shipped_limoe_tiny_digits_meets_zero_shot_target():
    # Only text prompts for the classes; test split = samples 1438..1796.
    result = evaluate_zero_shot("limoe_tiny_digits", "digits")
    assert result["num_examples"] == 359
    assert result["zero_shot_accuracy"] >= 0.90


def _logged_epochs(out):
    with open(os.path.join(out, "log.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_tiny_run_resumes_and_writes_artifacts(tmp_path, small_limoe_preset):
    # (The checkpoint mechanics are covered in test_checkpoints.py: the recipe
    # uses the same make_callbacks / ResumableCheckpoint.)
    out = str(tmp_path / "run")
    config = TrainingConfig(epochs=2, batch_size=32, max_batches=4, learning_rate=3e-3)
    quick = dict(preset=small_limoe_preset, output_dir=out, config=config, verbose=0,
                 run_eagerly=EAGER)
    with pytest.raises(KeyboardInterrupt):
        train_dual_encoder(callbacks=[InterruptAfter(1)], **quick)
    assert _logged_epochs(out) == [0]
    first = train_dual_encoder(**quick)
    assert _logged_epochs(out) == [0, 1]  # resumed: epoch 1 only
    # The history covers the epochs before the interruption too.
    assert len(first["history"]["loss"]) == 2
    assert first["final_loss"] < first["initial_loss"]
    confusion = np.asarray(first["confusion_matrix"])
    assert first["zero_shot_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    for name in ("model.keras", "metrics.json", "log.csv", "training_curves.png",
                 "routing_heatmap.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert sorted(os.path.basename(f) for f in first["figures"]) == [
        "routing_heatmap.png", "training_curves.png"]
    # Running a finished run again returns its metrics without training.
    assert train_dual_encoder(**quick) == first
    assert _logged_epochs(out) == [0, 1]
    # Other settings in the same directory are refused, naming the change
    # (overwrite=True replacing the run: tests/test_cli_dual_encoder.py).
    with pytest.raises(ValueError, match=r"different settings \(epochs: 2 -> 1\)"):
        train_dual_encoder(**dict(quick, config=config.replace(epochs=1)))


def test_bad_models_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not a dual encoder"):
        load_dual_encoder("moe_vit_tiny", load_weights=False)
    with pytest.raises(ValueError, match="does not exist"):
        load_dual_encoder(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="split"):
        evaluate_zero_shot("limoe_tiny_digits", "digits", split="dev")


def test_a_folder_too_small_for_a_test_split_is_refused_before_training(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    for name in ("cat", "dog"):
        os.makedirs(folder / name)
        Image.new("L", (8, 8), 40 if name == "cat" else 200).save(folder / name / "0.png")
    with pytest.raises(ValueError, match="has no 'test' split with these options"):
        evaluate_zero_shot("limoe_tiny_digits", f"folder:{folder}")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="has no 'test' split with these options"):
        train_dual_encoder(data=f"folder:{folder}", output_dir=str(out),
                           config=TrainingConfig(epochs=1, batch_size=2))
    assert not (out / "model.keras").exists() and not (out / "log.csv").exists()


@pytest.mark.single_backend("torch")  # the data handling; training: the test above
def test_captioned_folder_without_labels_trains_and_saves(tmp_path, capsys, small_limoe_preset):
    # Image-caption pairs without class labels: contrastive training works, the model
    # is saved, and there is no zero-shot accuracy to measure (it needs labels).
    from PIL import Image

    root = tmp_path / "pairs"
    os.makedirs(root / "pics")
    lines = []
    for i in range(24):
        Image.new("L", (8, 8), 10 * i).save(root / "pics" / f"{i}.png")
        lines.append(f"pics/{i}.png\ta grey square of shade {i}")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from keras_sparse_moe.cli import main

    out = tmp_path / "run"
    assert main(["train", "--preset", small_limoe_preset, "--data", f"folder:{root}", "--output",
                 str(out), "--epochs", "1", "--batch-size", "4", "--max-batches", "2",
                 "--quiet", *(["--run-eagerly"] if EAGER else [])]) == 0
    assert "not measured: the data has no class labels" in capsys.readouterr().out
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["zero_shot_accuracy"] is None
    assert (out / "model.keras").exists() and (out / "training_curves.png").exists()
    assert not (out / "routing_heatmap.png").exists()
    assert json.load(open(out / "run.json"))["status"] == "finished"


def test_representative_tower_images_of_another_raw_shape():
    # int8 calibration of an image tower exported for raw RGB 16x16 inputs.
    from keras_sparse_moe.recipes.dual_encoder import representative_tower_images

    images = representative_tower_images("limoe_tiny_digits", "digits", samples=4,
                                         raw_shape=(16, 16, 3))
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32
    assert 8.0 < float(images.max()) <= 16.0  # raw digits (0..16), before the converter
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray, as RGB
    with pytest.raises(ValueError, match=r"`raw_shape` must be None or \(height, width, "
                                         r"channels\).*received \(16, 16\)"):
        representative_tower_images("limoe_tiny_digits", "digits", samples=4, raw_shape=(16, 16))
