"""The settings of a training run, and the optimizer they make."""

import dataclasses

from keras_sparse_moe.recipes.augment import AUGMENTATIONS
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How to train: the optimizer, its schedule, the data handling and the
    seed, for image classifiers and dual encoders alike (`train`).

    The optimizer is AdamW with linear warmup then cosine decay to 1% of the
    peak learning rate, decoupled weight decay (not on biases, normalisation
    scales and embeddings) and global-norm gradient clipping.

    Args:
        epochs: int >= 1.
        batch_size: int >= 1 (dual encoders: >= 2, a contrastive batch needs
            negatives).
        learning_rate: float > 0, the peak learning rate.
        weight_decay: float >= 0.
        warmup_fraction: float in [0, 1), share of the steps warming up.
        clipnorm: float > 0 or None, global-norm gradient clipping.
        ema_momentum: None, or a float in (0, 1): keep an exponential moving
            average of the weights and end training with it (Keras
            `use_ema`; needs thousands of steps at 0.999).
        label_smoothing: float in [0, 1), classifiers' cross-entropy.
        augment: training augmentation: `"affine"` (rotation, zoom, shift),
            `"elastic"` (affine plus smooth elastic distortions), `"shift"`
            or `"none"`. Dual encoders use random shifts unless `"none"`.
        validation_fraction: share of the training data held out for
            validation when the dataset has no validation split (0: none).
        early_stopping_patience: None, or int >= 1: stop after this many
            epochs without a better validation loss and keep the best weights.
        seed: int >= 0: initialisation, shuffling and augmentation.
        max_batches: None, or use at most this many batches of each split
            per epoch (quick smoke runs).
        deterministic: use deterministic kernels (process-wide), so the same
            run repeats bit for bit on the same machine.

    Example:
    >>> config = TrainingConfig(epochs=10, learning_rate=1e-3)
    >>> optimizer = config.make_optimizer(total_steps=100)
    >>> type(optimizer).__name__, round(float(optimizer.learning_rate), 6)
    ('AdamW', 1e-05)
    >>> TrainingConfig.digits().epochs
    100
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    clipnorm: float | None = 1.0
    ema_momentum: float | None = None
    label_smoothing: float = 0.1
    augment: str = "affine"
    validation_fraction: float = 0.1
    early_stopping_patience: int | None = None
    seed: int = 0
    max_batches: int | None = None
    deterministic: bool = False

    def __post_init__(self):
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("learning_rate", self.learning_rate, minimum=0.0, strict=True)
        check_float("weight_decay", self.weight_decay, minimum=0.0)
        for name in ("warmup_fraction", "label_smoothing", "validation_fraction"):
            value = check_float(name, getattr(self, name), minimum=0.0)
            if value >= 1:
                raise ValueError(f"Argument `{name}` must be in [0, 1); received {value}.")
        check_float("clipnorm", self.clipnorm, minimum=0.0, strict=True, allow_none=True)
        ema = check_float("ema_momentum", self.ema_momentum, minimum=0.0, strict=True,
                          allow_none=True)
        if ema is not None and ema >= 1:
            raise ValueError(f"Argument `ema_momentum` must be in (0, 1) or None; received {ema}.")
        check_choice("augment", self.augment, AUGMENTATIONS)
        if self.early_stopping_patience is not None:
            check_int("early_stopping_patience", self.early_stopping_patience, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.max_batches is not None:
            check_int("max_batches", self.max_batches, minimum=1)
        if not isinstance(self.deterministic, bool):
            raise ValueError(
                f"Argument `deterministic` must be True or False; received {self.deterministic!r}."
            )

    @classmethod
    def digits(cls, **changes):
        """The recipe of the shipped digits presets (docs/results.md): 100
        epochs and the defaults otherwise; `changes` replace fields."""
        return cls(**{"epochs": 100, **changes})

    def replace(self, **changes):
        """A copy with `changes` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The fields as a dict (what `run.json` records)."""
        return dataclasses.asdict(self)

    def make_optimizer(self, total_steps, no_decay=("bias", "gamma", "beta")):
        """AdamW over `total_steps` steps with this config's schedule.

        Args:
            total_steps: int >= 1, optimizer steps of the whole run.
            no_decay: variable-name fragments kept out of weight decay.
        """
        from keras_sparse_moe.recipes.training import make_optimizer

        total_steps = check_int("total_steps", total_steps, minimum=1)
        return make_optimizer(
            self.learning_rate, total_steps,
            warmup_steps=int(round(self.warmup_fraction * total_steps)),
            weight_decay=self.weight_decay, clipnorm=self.clipnorm,
            ema_momentum=self.ema_momentum, no_decay=no_decay,
        )


def check_config(config):
    """`config`, or the default `TrainingConfig` when it is None.

    Raises:
        ValueError: `config` is neither a `TrainingConfig` nor None.

    Example:
    >>> check_config(None).epochs
    30
    """
    config = TrainingConfig() if config is None else config
    if not isinstance(config, TrainingConfig):
        raise ValueError(f"Argument `config` must be a TrainingConfig or None; received {config!r}.")
    return config
