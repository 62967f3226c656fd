"""A finished training is never trained again: a run interrupted after `fit`
(while saving or evaluating) is completed from its saved model; and the
recipes' checks of what they train on (finite loss, labels in range)."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.data import DatasetInfo
from keras_sparse_moe.data import Datasets
from keras_sparse_moe.data import make_pipeline
from keras_sparse_moe.recipes import classifier as classifier_recipe
from keras_sparse_moe.recipes import dual_encoder as dual_encoder_recipe
from keras_sparse_moe.recipes.classifier import train_classifier
from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.dual_encoder import train_dual_encoder
from keras_sparse_moe.recipes.training import NonFiniteLossError
from tests.configs import MOE_VIT_OVERRIDES

CONFIG = TrainingConfig(epochs=1, max_batches=2, batch_size=32)
QUICK = dict(
    overrides=MOE_VIT_OVERRIDES, verbose=0, run_eagerly=keras.backend.backend() != "jax",
    single_image_latency=False, routing_examples=32, plots=False,
)


class KillAtTrainEnd(keras.callbacks.Callback):
    """A kill right after the last epoch: `fit` never returns."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt


class CountTraining(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1


def _kill(*args, **kwargs):
    raise KeyboardInterrupt


def _logged_epochs(directory):
    with open(os.path.join(directory, "log.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _status(directory):
    with open(os.path.join(directory, "run.json")) as handle:
        return json.load(handle)["status"]


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


# What is tested is the recipe's bookkeeping (run.json, log.csv, which steps
# a re-run skips), the same code on every backend; the resume tests of
# tests/recipes/test_classifier.py train, save and reload on each backend.
@pytest.mark.single_backend("torch")
def test_classifier_run_killed_after_fit_is_completed_without_training(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    # Killed between the end of fit and the saved model: the epochs are
    # committed, so the re-run has nothing left to train ...
    with pytest.raises(KeyboardInterrupt):
        train_classifier("moe_vit_tiny", "digits", out, CONFIG, callbacks=[KillAtTrainEnd()],
                         **QUICK)
    assert _logged_epochs(out) == [0]
    counter = CountTraining()
    with monkeypatch.context() as patch:
        # ... and this re-run is killed during the evaluation, after model.keras.
        patch.setattr(classifier_recipe, "_evaluate", _kill)
        with pytest.raises(KeyboardInterrupt):
            train_classifier("moe_vit_tiny", "digits", out, CONFIG, callbacks=[counter], **QUICK)
    assert counter.epochs == 0
    assert _logged_epochs(out) == [0]
    assert _status(out) == "trained"
    assert not os.path.exists(os.path.join(out, "backup"))
    trained = _read(os.path.join(out, "model.keras"))
    metrics = train_classifier("moe_vit_tiny", "digits", out, CONFIG, callbacks=[counter], **QUICK)
    assert counter.epochs == 0  # the finished training is not redone
    assert _read(os.path.join(out, "model.keras")) == trained
    assert (metrics["epochs_run"], metrics["resumed_from_epoch"]) == (1, 1)
    assert metrics["history"]["loss"] > 0  # the training's last epoch, from log.csv
    assert metrics["examples"] == 64
    assert _status(out) == "finished"
    assert os.path.isfile(os.path.join(out, "preset", "config.json"))
    with open(os.path.join(out, "metrics.json")) as handle:
        assert json.load(handle)["accuracy"] == pytest.approx(metrics["accuracy"])
    # The completed run scores what the saved model scores.
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    again = classifier_recipe.evaluate_classifier(model, "digits", batch_size=32, max_batches=2,
                                                  routing_examples=0, single_image_latency=False)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
@pytest.mark.single_backend("torch")  # the recipes' bookkeeping, as above
def test_dual_encoder_run_killed_after_fit_is_completed_without_training(
        tmp_path, monkeypatch, small_limoe_preset):
    preset = small_limoe_preset  # limoe_tiny's tokenizer and image converter, a smaller network
    out = str(tmp_path / "run")
    config = TrainingConfig(epochs=1, batch_size=16, max_batches=2)
    counter = CountTraining()
    with monkeypatch.context() as patch:
        patch.setattr(dual_encoder_recipe, "evaluate_zero_shot", _kill)
        with pytest.raises(KeyboardInterrupt):
            train_dual_encoder(preset, "digits", out, config, verbose=0, plots=False,
                               run_eagerly=QUICK["run_eagerly"])
    assert _status(out) == "trained"
    metrics = train_dual_encoder(preset, "digits", out, config, verbose=0, plots=False,
                                 callbacks=[counter], run_eagerly=QUICK["run_eagerly"])
    assert counter.epochs == 0
    assert _logged_epochs(out) == [0]
    confusion = np.asarray(metrics["confusion_matrix"])
    assert confusion.sum() == 359  # the completed run evaluated the whole test split
    assert metrics["zero_shot_accuracy"] == pytest.approx(np.trace(confusion) / 359)
    assert _status(out) == "finished"


def _arrays_datasets(images, labels, num_classes=10):
    train = make_pipeline(images, labels, batch_size=4)
    info = DatasetInfo("arrays", "arrays", num_classes, tuple(str(i) for i in range(num_classes)),
                       {"train": len(labels)}, image_shape=images.shape[1:], max_value=16.0)
    return Datasets(train, None, None, info)


def test_a_label_outside_the_classes_is_refused_before_training(tmp_path):
    images = np.zeros((8, 8, 8, 1), "float32")
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 50])
    with pytest.raises(ValueError, match="label 50, but the model has 10 classes"):
        train_classifier("moe_vit_tiny", _arrays_datasets(images, labels), str(tmp_path),
                         CONFIG, **QUICK)
    assert not os.path.exists(tmp_path / "log.csv")


def test_a_non_finite_loss_stops_training_naming_the_epoch_and_step(tmp_path):
    images = np.full((8, 8, 8, 1), np.nan, "float32")
    labels = np.arange(8) % 10
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1, step 1"):
        train_classifier("moe_vit_tiny", _arrays_datasets(images, labels), str(tmp_path),
                         CONFIG, **QUICK)
    assert not os.path.exists(tmp_path / "metrics.json")
    assert _status(tmp_path) == "running"
