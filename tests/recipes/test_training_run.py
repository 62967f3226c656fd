"""`TrainingRun`, the run lifecycle both training recipes share, on a small
Keras model: the stages it records, the commit of the trained model, the
completion of a trained run without training, and `save=False`."""

import json
import logging
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.training_run import TrainingRun

pytestmark = pytest.mark.single_backend("torch")

CONFIG = TrainingConfig(epochs=2, batch_size=4)
LOGGER = logging.getLogger("tests.training_run")


def _model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


def _run(directory, **kwargs):
    return TrainingRun(str(directory), {"epochs": 2}, CONFIG, keys=("epochs",), logger=LOGGER,
                       **kwargs)


def _train(run):
    model = _model()
    run.compile(model, 2, ("bias",), loss="mse", run_eagerly=True)

    def fit():
        x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
        _, seconds = run.fit(model, x, None, y=y, batch_size=4, verbose=0)
        return {"seconds": seconds}

    return model, run.train(model, fit)


def _run_json(directory):
    with open(os.path.join(directory, "run.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_a_run_records_its_stages_and_a_trained_run_is_completed_without_training(tmp_path):
    run = _run(tmp_path)
    assert run.state == "fresh"
    model, record = _train(run)
    assert _run_json(tmp_path)["status"] == "trained"
    assert not os.path.exists(tmp_path / "backup")
    calls = []
    assert run.stage("evaluation", lambda: calls.append(1) or {"loss": 0.5}) == {"loss": 0.5}
    # Interrupted here: the next run loads the trained model and reuses the evaluation.
    again = _run(tmp_path)
    assert again.state == "trained"
    reloaded, reused = _train(again)
    assert reused == record
    np.testing.assert_allclose(reloaded.get_weights()[0], model.get_weights()[0])
    assert again.stage("evaluation", lambda: calls.append(2)) == {"loss": 0.5}
    assert calls == [1]
    again.finish({"loss": 0.5})
    assert _run_json(tmp_path)["status"] == "finished"
    assert sorted(_run_json(tmp_path)["stages"]) == ["evaluation", "fit", "metrics"]
    finished = _run(tmp_path)
    assert finished.state == "finished"
    assert finished.previous_metrics() == {"loss": 0.5}


def test_without_saving_nothing_is_committed_and_run_json_has_no_stages(tmp_path):
    run = _run(tmp_path, save=False)
    _train(run)
    assert not os.path.exists(tmp_path / "model.keras")
    assert run.stage("evaluation", lambda: {"loss": 0.5}) == {"loss": 0.5}
    run.finish({"loss": 0.5})
    assert _run_json(tmp_path) == {"status": "finished", "settings": {"epochs": 2}}
