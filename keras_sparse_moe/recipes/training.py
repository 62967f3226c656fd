"""Building blocks shared by the recipes: AdamW with warmup + cosine decay,
label-smoothed sparse cross-entropy, and the callbacks of a resumable run."""

import os

import keras
from keras import ops

from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


def make_optimizer(
    learning_rate=1e-3,
    total_steps=1000,
    warmup_steps=None,
    weight_decay=0.05,
    clipnorm=1.0,
    min_learning_rate_ratio=0.01,
):
    """AdamW with linear warmup then cosine decay, and gradient clipping.

    Args:
        learning_rate: float > 0, peak learning rate (reached after warmup).
        total_steps: int >= 1, optimizer steps of the whole run.
        warmup_steps: int or None (default: 10% of `total_steps`).
        weight_decay: float >= 0 (decoupled, AdamW).
        clipnorm: float > 0 or None, global-norm clipping of each gradient.
        min_learning_rate_ratio: final learning rate / peak.

    Example:
    >>> opt = make_optimizer(1e-3, total_steps=100)
    >>> type(opt).__name__
    'AdamW'
    """
    schedule = make_schedule(learning_rate, total_steps, warmup_steps, min_learning_rate_ratio)
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=check_float("weight_decay", weight_decay, minimum=0.0),
        clipnorm=clipnorm,
    )


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


class _ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves the trained model: a `Distiller`'s
    student (the classifier), any other model as it is."""

    def set_model(self, model):
        from keras_sparse_moe.recipes.distillation import trained_model

        super().set_model(trained_model(model))


def make_callbacks(output_dir, early_stopping_patience=None, monitor="val_loss", extra=()):
    """Callbacks of a resumable run writing into `output_dir`.

    - `BackupAndRestore` in `output_dir/backup`: re-running the same command
      with the same output directory resumes after the last finished epoch.
    - `ModelCheckpoint` of the best model (`output_dir/best.keras`, on
      `monitor`) and of the last epoch (`output_dir/last.keras`); when the
      fitted model is a `Distiller`, of its student.
    - `CSVLogger` (`output_dir/log.csv`, appended on resume).
    - Optional `EarlyStopping` with best-weights restoration.

    Args:
        output_dir: str, created if missing.
        early_stopping_patience: int or None.
        monitor: metric watched by the best checkpoint and early stopping.
        extra: more callbacks to append.

    Example:
    >>> import tempfile
    >>> [type(c).__name__ for c in make_callbacks(tempfile.mkdtemp())][:3]
    ['BackupAndRestore', '_ModelCheckpoint', '_ModelCheckpoint']
    """
    os.makedirs(output_dir, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
        _ModelCheckpoint(
            os.path.join(output_dir, "best.keras"), monitor=monitor, save_best_only=True
        ),
        _ModelCheckpoint(os.path.join(output_dir, "last.keras")),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"), append=True),
    ]
    if early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=check_int("early_stopping_patience", early_stopping_patience, minimum=1),
                restore_best_weights=True,
            )
        )
    callbacks.extend(extra)
    return callbacks
