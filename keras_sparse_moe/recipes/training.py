"""Building blocks shared by the recipes: AdamW with warmup + cosine decay,
label-smoothed sparse cross-entropy, and the callbacks of a resumable run."""

import math
import os

import keras
from keras import ops

from keras_sparse_moe.recipes.run_state import BEST_FILE
from keras_sparse_moe.recipes.run_state import LOG_FILE
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


def make_optimizer(
    learning_rate=1e-3,
    total_steps=1000,
    warmup_steps=None,
    weight_decay=0.05,
    clipnorm=1.0,
    min_learning_rate_ratio=0.01,
    ema_momentum=None,
    no_decay=("bias", "gamma", "beta"),
):
    """AdamW with linear warmup then cosine decay, and gradient clipping:
    the optimizer of every recipe (`TrainingConfig.make_optimizer`).

    Args:
        learning_rate: float > 0, peak learning rate (reached after warmup).
        total_steps: int >= 1, optimizer steps of the whole run.
        warmup_steps: int or None (default: `max(1, total_steps // 10)`).
        weight_decay: float >= 0 (decoupled, AdamW).
        clipnorm: float > 0 or None, global-norm clipping of each gradient.
        min_learning_rate_ratio: final learning rate / peak.
        ema_momentum: None, or a float in (0, 1): keep an exponential moving
            average of the weights (Keras `use_ema`).
        no_decay: variable-name fragments kept out of weight decay.

    Example:
    >>> opt = make_optimizer(1e-3, total_steps=100)
    >>> type(opt).__name__
    'AdamW'
    """
    schedule = make_schedule(learning_rate, total_steps, warmup_steps, min_learning_rate_ratio)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=check_float("weight_decay", weight_decay, minimum=0.0),
        clipnorm=clipnorm,
        use_ema=ema_momentum is not None,
        ema_momentum=ema_momentum or 0.99,
    )
    if no_decay:
        optimizer.exclude_from_weight_decay(var_names=list(no_decay))
    return optimizer


def build_optimizer(model):
    """Create the variables of `model`'s compiled optimizer now, before `fit`.

    Keras on TensorFlow otherwise creates them while tracing the first train
    step, and TensorFlow then traces that step a second time (a function that
    created variables is traced again without them): building first saves
    that second trace. On JAX and PyTorch `fit` builds the optimizer
    before its first step anyway. A model that is not built yet is left as it
    is (the optimizer then follows its variables when `fit` builds them).

    Example:
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(make_optimizer(1e-3, total_steps=10), "mse")
    >>> build_optimizer(model)
    >>> model.optimizer.built
    True
    """
    if model.optimizer is not None and not model.optimizer.built and model.built:
        model.optimizer.build(model.trainable_variables)


def make_schedule(learning_rate=1e-3, total_steps=1000, warmup_steps=None,
                  min_learning_rate_ratio=0.01):
    """Linear warmup to `learning_rate`, then cosine decay to
    `learning_rate * min_learning_rate_ratio` at `total_steps`.

    Args: as `make_optimizer`.

    Example:
    >>> schedule = make_schedule(1e-3, total_steps=100, warmup_steps=10)
    >>> round(float(schedule(10)), 6)
    0.001
    """
    learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, strict=True)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 10)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0, maximum=total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * min_learning_rate_ratio if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=min_learning_rate_ratio,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    return schedule


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy from integer labels with label smoothing.

    Keras's `SparseCategoricalCrossentropy` has no label smoothing; this is
    `CategoricalCrossentropy(label_smoothing)` on one-hot labels.

    Args:
        label_smoothing: float in [0, 1).
        from_logits: bool.

    Example:
    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropyWithSmoothing(0.1, from_logits=True)
    >>> float(loss(np.array([1]), np.array([[0.0, 10.0]]))) > 0
    True
    """

    def __init__(self, label_smoothing=0.1, from_logits=True, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0)
        if self.label_smoothing >= 1:
            raise ValueError(
                f"Argument `label_smoothing` must be in [0, 1); received {label_smoothing}."
            )
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes)
        return keras.losses.categorical_crossentropy(
            labels, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop `fit` with a `NonFiniteLossError` naming the epoch and step at
    which the training loss became NaN or infinite (Keras' `TerminateOnNaN`
    ends `fit` quietly, and the run would then be evaluated and saved as if
    it had trained).

    Example:
    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.array([[1.0, np.nan]] * 4), np.ones((4, 1))
    >>> model.fit(x, y, batch_size=2, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    Traceback (most recent call last):
    ...
    keras_sparse_moe.recipes.training.NonFiniteLossError: The training loss is nan at epoch 1, step 1: ...
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(ops.convert_to_numpy(loss))
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss is {loss} at epoch {self._epoch + 1}, step {batch + 1}: "
                "training stopped. Check the data for NaN or infinite values, or lower the "
                "learning rate; re-running resumes after the last finished epoch."
            )


class _ResumableCSVLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` appending to the log of an interrupted run after dropping
    the rows of epochs that run did not commit (an epoch logged just before a
    crash is trained again, and must not appear twice)."""

    def __init__(self, filename, backup_dir):
        super().__init__(filename, append=True)
        self.backup_dir = backup_dir

    def on_train_begin(self, logs=None):
        from keras_sparse_moe.recipes.checkpoints import committed_epoch

        if os.path.isfile(self.filename):
            epochs = committed_epoch(self.backup_dir)
            if epochs:
                truncate_csv_log(self.filename, epochs)
            else:
                # A run that starts from scratch replaces the log of an
                # earlier run in the same directory (header included).
                os.remove(self.filename)
        super().on_train_begin(logs)


def read_log(path):
    """The per-epoch metrics of a run's `log.csv`, in epoch order: a dict
    `{metric: [value per epoch]}` (the `epoch` column left out). After a
    resumed run this holds every epoch, not only those of the last `fit`.

    Args:
        path: the `log.csv` written by `make_callbacks`.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> _ = open(path, "w").write("epoch,loss,val_loss\\n1,0.5,NA\\n0,0.9,0.8\\n")
    >>> read_log(path)
    {'loss': [0.9, 0.5], 'val_loss': [0.8, nan]}
    """
    import csv

    if not os.path.isfile(path):
        raise ValueError(f"No training log at {path!r}.")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["epoch"]))
    columns = [name for name in (rows[0] if rows else {}) if name != "epoch"]
    return {name: [_number(row[name]) for row in rows] for name in columns}


def _number(text):
    """A CSV log value as a float; NaN for a missing one (Keras writes "NA")."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def truncate_csv_log(path, epochs):
    """Keep the header and the rows of epochs `0 .. epochs - 1` (atomically)."""
    import csv

    from keras_sparse_moe.utils.io import atomic_path

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]]
    for row in rows[1:]:
        try:
            if int(row[column]) < epochs:
                kept.append(row)
        except (IndexError, ValueError):
            continue
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(kept)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that continues an interrupted run's count: the best
    value, its epoch and the epochs waited since come from the committed
    checkpoint state, and the best weights (for `restore_best_weights`) from
    `best.keras`. A plain `EarlyStopping` would start again from scratch and
    could never restore a best epoch from before the interruption."""

    def __init__(self, output_dir, backup_dir, **kwargs):
        super().__init__(**kwargs)
        self.output_dir = output_dir
        self.backup_dir = backup_dir

    def on_train_begin(self, logs=None):
        from keras_sparse_moe.recipes.checkpoints import committed_state

        super().on_train_begin(logs)
        state = committed_state(self.backup_dir)
        if not state or state.get("monitor") != self.monitor or state.get("best") is None:
            return
        best_epoch = int(state["best_epoch"])  # 1-based, as committed
        self.best = float(state["best"])
        self.best_epoch = best_epoch - 1
        self.wait = int(state["epoch"]) - best_epoch
        best_file = os.path.join(self.output_dir, BEST_FILE)
        if self.restore_best_weights and os.path.isfile(best_file):
            self.best_weights = keras.saving.load_model(best_file, compile=False).get_weights()


def make_callbacks(output_dir, early_stopping_patience=None, monitor="val_loss", extra=(),
                   keep_backup=False, terminate_on_nan=False):
    """Callbacks of a resumable run writing into `output_dir`.

    - `CSVLogger` (`output_dir/log.csv`, appended on resume; rows of epochs
      the interrupted run did not commit are dropped first).
    - `ResumableCheckpoint`: after every epoch the model is saved once, crash-safely, to
      `output_dir/backup/`, then copied to `output_dir/last.keras` and, when
      `monitor` improved, to `output_dir/best.keras`. Re-running the same
      command with the same output directory resumes after the last finished
      epoch with the weights and optimizer state of that epoch.
    - Optional `EarlyStopping` with best-weights restoration; after a resume
      it continues the interrupted run's count (best value, epochs waited)
      and can restore a best epoch from before the interruption.

    Args:
        output_dir: str, created if missing.
        early_stopping_patience: int or None.
        monitor: metric watched by the best checkpoint and early stopping.
        extra: more callbacks to append.
        keep_backup: keep `output_dir/backup/` when `fit` ends (the caller
            deletes it once the trained model is saved).
        terminate_on_nan: stop training with a `NonFiniteLossError` naming
            the epoch and step when the loss is NaN or infinite
            (`StopOnNonFiniteLoss`, first in the list).

    Example:
    >>> import tempfile
    >>> [type(c).__name__ for c in make_callbacks(tempfile.mkdtemp())]
    ['_ResumableCSVLogger', 'ResumableCheckpoint']
    """
    from keras_sparse_moe.recipes.checkpoints import ResumableCheckpoint

    os.makedirs(output_dir, exist_ok=True)
    checkpoint = ResumableCheckpoint(output_dir, monitor=monitor, keep_backup=keep_backup)
    callbacks = [StopOnNonFiniteLoss()] if terminate_on_nan else []
    callbacks += [
        # Before the checkpoint: an epoch's row is on disk before the epoch
        # is committed, so a crash never loses a committed epoch's row.
        _ResumableCSVLogger(os.path.join(output_dir, LOG_FILE), checkpoint.backup_dir),
        checkpoint,
    ]
    if early_stopping_patience is not None:
        # After the checkpoint, which restores the run it resumes first.
        callbacks.append(
            _ResumableEarlyStopping(
                output_dir,
                checkpoint.backup_dir,
                monitor=monitor,
                mode=checkpoint.mode,  # one notion of "better" for both
                patience=check_int("early_stopping_patience", early_stopping_patience, minimum=1),
                restore_best_weights=True,
            )
        )
    callbacks.extend(extra)
    return callbacks
