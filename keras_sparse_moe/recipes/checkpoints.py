"""Crash-safe, resumable per-epoch checkpoints.

`ResumableCheckpoint` replaces the trio Keras `BackupAndRestore` +
`ModelCheckpoint(best)` + `ModelCheckpoint(last)`:

- the model is serialised **once** per epoch (Keras' own `.keras` format,
  weights and optimizer state included) instead of three times; `last.keras`
  and `best.keras` are copies of that file;
- every file appears by an atomic rename, and the epoch is committed by
  replacing one small JSON file (`backup/state.json`) only after the
  checkpoint it names and the copies are complete. A crash at any instant leaves either the
  previous epoch's state or the new one, never a half-written file that a
  resumed run would trip over;
- the best value of the monitored metric is committed with the epoch, so
  after a resume `best.keras` is only replaced by an epoch better than every
  epoch before the interruption (a plain `ModelCheckpoint` starts again from
  infinity and overwrites it with the first resumed epoch).

`committed_epoch(backup_dir)` tells a caller how many epochs an interrupted
run finished (0 when there is nothing to resume).
"""

import glob
import logging
import math
import os
import shutil

import keras

from keras_sparse_moe.recipes.run_state import BACKUP_DIR
from keras_sparse_moe.recipes.run_state import BEST_FILE
from keras_sparse_moe.recipes.run_state import LAST_FILE
from keras_sparse_moe.utils.io import atomic_path
from keras_sparse_moe.utils.io import read_json
from keras_sparse_moe.utils.io import remove_atomic_leftovers
from keras_sparse_moe.utils.io import write_json

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
# What Keras' BackupAndRestore leaves behind (runs interrupted before this
# callback existed resume from it too).
_KERAS_WEIGHTS = "latest.weights.h5"
_KERAS_METADATA = "training_metadata.json"
_MODES = ("auto", "min", "max")


def committed_state(backup_dir):
    """The state an interrupted run committed in `backup_dir` (a dict with
    `epoch`, `checkpoint`, `monitor`, `best`, `best_epoch`), or None when
    there is none or the checkpoint it names is missing.

    Example:
    >>> import tempfile
    >>> committed_state(tempfile.mkdtemp()) is None
    True
    """
    state = read_json(os.path.join(backup_dir, STATE_FILE))
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        return None
    if not os.path.isfile(os.path.join(backup_dir, str(state.get("checkpoint")))):
        return None
    return state


def _read_keras_backup(backup_dir):
    """(epoch, weights path) of a Keras `BackupAndRestore` directory, or None."""
    weights = os.path.join(backup_dir, _KERAS_WEIGHTS)
    try:
        epoch = int(read_json(os.path.join(backup_dir, _KERAS_METADATA))["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
    return (epoch, weights) if os.path.isfile(weights) else None


def committed_epoch(backup_dir):
    """Number of epochs an interrupted run committed in `backup_dir` (0 if none).

    Example:
    >>> import tempfile
    >>> committed_epoch(tempfile.mkdtemp())
    0
    """
    state = committed_state(backup_dir)
    if state is not None:
        return state["epoch"]
    legacy = _read_keras_backup(backup_dir)
    return legacy[0] if legacy else 0


class ResumableCheckpoint(keras.callbacks.Callback):
    """Per-epoch checkpoints that survive a crash and resume a run.

    After every epoch the trained model is saved once to
    `directory/backup/epoch_{N}.keras`, `directory/last.keras` (and
    `directory/best.keras` when `monitor` improved) are replaced by copies
    of it, and then the epoch is committed in `directory/backup/state.json`.

    When `fit` starts and `directory/backup` holds a committed epoch, the
    weights and optimizer state are restored from it and `fit` continues
    after that epoch. A run that ends normally (all epochs, or early
    stopping) deletes `directory/backup`, unless `keep_backup` (then the
    caller deletes it once it has saved the trained model: a crash in
    between resumes after the last epoch instead of starting afresh).

    Args:
        directory: str, the run's output directory (created if missing).
        monitor: str, metric for `best.keras` (e.g. `"val_loss"`).
        mode: `"auto"` (maximise metrics named like accuracy, minimise the
            rest), `"min"` or `"max"`.
        save_best: bool, write `best.keras`.
        save_last: bool, write `last.keras`.
        keep_backup: bool, keep `directory/backup` when `fit` ends.

    Example:
    >>> import tempfile, numpy as np, keras, os
    >>> out = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((8, 3)), np.ones((8, 1))
    >>> _ = model.fit(x, y, epochs=2, verbose=0,
    ...               callbacks=[ResumableCheckpoint(out, monitor="loss")])
    >>> sorted(os.listdir(out))
    ['best.keras', 'last.keras']
    """

    def __init__(self, directory, monitor="val_loss", mode="auto", save_best=True,
                 save_last=True, keep_backup=False):
        super().__init__()
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise ValueError(
                f"Argument `directory` must be a non-empty path; received {directory!r}."
            )
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                f"Argument `monitor` must be a metric name such as 'val_loss'; "
                f"received {monitor!r}."
            )
        if mode not in _MODES:
            raise ValueError(f"Argument `mode` must be one of {_MODES}; received {mode!r}.")
        if mode == "auto":
            name = monitor[4:] if monitor.startswith("val_") else monitor
            mode = "max" if ("acc" in name or name.startswith(("auc", "f1", "precision",
                                                                  "recall"))) else "min"
        self.directory = os.fspath(directory)
        self.backup_dir = os.path.join(self.directory, BACKUP_DIR)
        self.monitor = monitor
        self.mode = mode
        self.save_best = bool(save_best)
        self.save_last = bool(save_last)
        self.keep_backup = bool(keep_backup)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = None
        self._warned_missing = False

    # --- resume ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        for directory in (self.directory, self.backup_dir):  # saves a crash interrupted
            remove_atomic_leftovers(directory)
        state = committed_state(self.backup_dir)
        legacy = None if state is not None else _read_keras_backup(self.backup_dir)
        if state is None and legacy is None:
            return
        model = self.model
        if not model.built:
            raise ValueError(
                "ResumableCheckpoint restores an interrupted run into the model passed to "
                "fit(), which must be built first (call it on a batch of data)."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        if state is not None:
            model.load_weights(os.path.join(self.backup_dir, state["checkpoint"]))
            epoch = state["epoch"]
            best = state.get("best")
            if best is not None and state.get("monitor") == self.monitor:
                self.best = float(best)
                self.best_epoch = state.get("best_epoch")
        else:
            epoch, weights = legacy
            model.load_weights(weights)
        # The hook Keras' own BackupAndRestore uses: fit() starts at this epoch.
        model._initial_epoch = epoch

    # --- save -----------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch_{epoch + 1}.keras"
        checkpoint = os.path.join(self.backup_dir, name)
        with atomic_path(checkpoint, suffix=".keras") as tmp:
            self.model.save(tmp)

        improved = False
        value = logs.get(self.monitor)
        if value is None:
            if self.save_best and not self._warned_missing:
                logger.warning(
                    "best.keras is not written: metric %r is not in the epoch logs (%s).",
                    self.monitor, ", ".join(sorted(logs)) or "none",
                )
                self._warned_missing = True
        else:
            value = float(value)
            better = value < self.best if self.mode == "min" else value > self.best
            if not math.isnan(value) and better:
                improved = True
                self.best, self.best_epoch = value, epoch + 1

        # The copies come before the commit, so a committed best epoch is
        # always the one in best.keras (a crash in between leaves an
        # uncommitted epoch there, which the resumed run trains again).
        if self.save_last:
            self._copy(checkpoint, os.path.join(self.directory, LAST_FILE))
        if self.save_best and improved:
            self._copy(checkpoint, os.path.join(self.directory, BEST_FILE))

        # Commit point: from here on a resumed run starts after this epoch.
        state = {
            "epoch": epoch + 1,
            "checkpoint": name,
            "monitor": self.monitor,
            "best": None if math.isinf(self.best) else self.best,
            "best_epoch": self.best_epoch,
        }
        write_json(os.path.join(self.backup_dir, STATE_FILE), state)
        for old in glob.glob(os.path.join(self.backup_dir, "epoch_*.keras")):
            if os.path.basename(old) != name:
                os.remove(old)
        for old in (_KERAS_WEIGHTS, _KERAS_METADATA):
            if os.path.exists(os.path.join(self.backup_dir, old)):
                os.remove(os.path.join(self.backup_dir, old))

    @staticmethod
    def _copy(source, target):
        with atomic_path(target, suffix=".keras") as tmp:
            shutil.copyfile(source, tmp)

    def on_train_end(self, logs=None):
        # Only reached when fit() returns normally: the run is finished.
        if not self.keep_backup and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)
