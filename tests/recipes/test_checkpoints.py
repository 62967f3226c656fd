"""Crash-safe resumable checkpoints (`ResumableCheckpoint`, `make_callbacks`)."""

import csv
import json
import logging
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.recipes import checkpoints
from keras_sparse_moe.recipes import make_callbacks
from keras_sparse_moe.recipes import make_optimizer
from keras_sparse_moe.recipes.checkpoints import ResumableCheckpoint
from keras_sparse_moe.recipes.checkpoints import committed_epoch
from tests.recipes.interrupt import InterruptAfter

EPOCHS = 4


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(make_optimizer(1e-2, total_steps=EPOCHS * 4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 6), dtype=np.float32)
    return x, (x[:, 0] * 3).astype("int32")


def _fit(model, out, extra=(), **kwargs):
    x, y = _data()
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0,
              callbacks=[record] + make_callbacks(out, monitor="loss", **kwargs) + list(extra))
    return seen


def _log_epochs(out):
    with open(os.path.join(out, "log.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _optimizer_state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = _model()
    assert _fit(straight, str(tmp_path / "a")) == [0, 1, 2, 3]

    out = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), out, extra=[InterruptAfter(2)])
    assert committed_epoch(os.path.join(out, "backup")) == 2
    resumed = _model()  # a fresh process rebuilds the model from scratch
    assert _fit(resumed, out) == [2, 3]

    assert _log_epochs(out) == [0, 1, 2, 3]
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 16
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_optimizer_state(straight), _optimizer_state(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not os.path.exists(os.path.join(out, "backup"))  # finished runs clean up
    last = keras.saving.load_model(os.path.join(out, "last.keras"))
    for a, b in zip(_weights(resumed), _weights(last)):
        np.testing.assert_allclose(a, b)


def test_crash_while_saving_leaves_the_previous_epoch_loadable(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    original_save = keras.Model.save
    saves = []

    def crashing_save(self, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 3:  # the third epoch: half a file, then the process "dies"
            with open(filepath, "wb") as handle:
                handle.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt
        return original_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), out)
    monkeypatch.undo()

    # Nothing half-written under a real name; last.keras is epoch 2's model.
    assert committed_epoch(os.path.join(out, "backup")) == 2
    leftovers = [n for d in (out, os.path.join(out, "backup")) for n in os.listdir(d)
                 if n.startswith(".tmp-")]
    assert leftovers == []
    keras.saving.load_model(os.path.join(out, "last.keras"))
    keras.saving.load_model(os.path.join(out, "best.keras"))
    # Epoch 2's row was logged before its checkpoint failed; resuming trains
    # epoch 2 again and logs it once.
    assert _log_epochs(out) == [0, 1, 2]
    assert _fit(_model(), out) == [2, 3]
    assert _log_epochs(out) == [0, 1, 2, 3]


def test_best_checkpoint_survives_a_resume(tmp_path):
    """After a resume, best.keras is replaced only by an epoch better than
    every epoch before the interruption."""
    scores = {0: 5.0, 1: 1.0, 2: 3.0, 3: 0.5}

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]

    def fit(model, extra=()):
        x, y = _data()
        model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[Score(), ResumableCheckpoint(out, monitor="score"), *extra])

    out = str(tmp_path / "run")
    first = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(first, extra=[InterruptAfter(3)])  # epochs 0-2; best is epoch 1 (1.0)
    epoch_2 = _weights(first)
    best_before = _weights(keras.saving.load_model(os.path.join(out, "best.keras")))
    state = json.load(open(os.path.join(out, "backup", "state.json")))
    assert (state["epoch"], state["best"], state["best_epoch"]) == (3, 1.0, 2)

    resumed = _model()
    scores[3] = 2.0  # the resumed epoch is worse than the best before the interruption
    fit(resumed)
    best_after = _weights(keras.saving.load_model(os.path.join(out, "best.keras")))
    for a, b in zip(best_before, best_after):
        np.testing.assert_array_equal(a, b)
    assert not all(np.allclose(a, b) for a, b in zip(epoch_2, best_after))


def test_resumes_a_keras_backup_and_restore_directory(tmp_path):
    """Runs interrupted under Keras' BackupAndRestore (before this callback)."""
    out = str(tmp_path / "run")
    x, y = _data()
    with pytest.raises(KeyboardInterrupt):
        _model().fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0,
                     callbacks=[keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
                                InterruptAfter(2)])
    assert committed_epoch(os.path.join(out, "backup")) == 2
    resumed = _model()
    assert _fit(resumed, out) == [2, 3]
    assert int(resumed.optimizer.iterations) == 16


def test_missing_monitor_warns_once_and_still_writes_last(tmp_path, caplog):
    out = str(tmp_path / "run")
    x, y = _data()
    with caplog.at_level(logging.WARNING, logger=checkpoints.__name__):
        _model().fit(x, y, epochs=2, verbose=0, callbacks=[ResumableCheckpoint(out)])
    assert [r.getMessage() for r in caplog.records].count(
        caplog.records[0].getMessage()) == 1
    assert "'val_loss' is not in the epoch logs" in caplog.records[0].getMessage()
    assert sorted(os.listdir(out)) == ["last.keras"]


def test_mode_follows_the_metric():
    assert ResumableCheckpoint("x", monitor="val_loss").mode == "min"
    assert ResumableCheckpoint("x", monitor="val_accuracy").mode == "max"
    assert ResumableCheckpoint("x", monitor="val_accuracy", mode="min").mode == "min"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"directory": ""}, "`directory`"),
        ({"directory": "x", "monitor": ""}, "`monitor`"),
        ({"directory": "x", "mode": "largest"}, "`mode` must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResumableCheckpoint(**kwargs)


def test_committed_epoch_ignores_a_state_without_its_checkpoint(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "state.json").write_text(json.dumps({"epoch": 3, "checkpoint": "epoch_3.keras"}))
    assert committed_epoch(str(backup)) == 0
    (backup / "epoch_3.keras").write_bytes(b"")
    assert committed_epoch(str(backup)) == 3


def test_early_stopping_continues_its_count_after_a_resume(tmp_path):
    """Patience 2, best epoch 1: an uninterrupted run stops after epoch 3 and
    restores epoch 1's weights. Interrupted after epoch 2, the resumed run
    must do the same (a fresh EarlyStopping would train to the end)."""
    scores = [5.0, 1.0, 3.0, 4.0, 0.5, 0.4]
    snapshots = {}

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]
            snapshots[epoch] = _weights(self.model)

    def fit(model, extra=()):
        x, y = _data()
        seen = []
        record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
        model.fit(x, y, epochs=len(scores), batch_size=16, shuffle=False, verbose=0,
                  callbacks=[record, Score()] + make_callbacks(
                      out, early_stopping_patience=2, monitor="score") + list(extra))
        return seen

    out = str(tmp_path / "straight")
    straight = _model()
    assert fit(straight) == [0, 1, 2, 3]
    for a, b in zip(snapshots[1], _weights(straight)):
        np.testing.assert_array_equal(a, b)

    out = str(tmp_path / "resumed")
    snapshots.clear()
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), extra=[InterruptAfter(3)])
    best = snapshots[1]
    resumed = _model()
    assert fit(resumed) == [3]
    for a, b in zip(best, _weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_a_fresh_run_replaces_an_earlier_log(tmp_path):
    out = str(tmp_path)
    with open(os.path.join(out, "log.csv"), "w") as handle:  # a finished run's log, other columns
        handle.write("epoch,old_metric\n0,1.0\n1,0.5\n2,0.25\n3,0.1\n4,0.05\n")
    assert _fit(_model(), out) == [0, 1, 2, 3]  # nothing committed: trains from epoch 0
    with open(os.path.join(out, "log.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    assert "old_metric" not in rows[0] and "loss" in rows[0]
