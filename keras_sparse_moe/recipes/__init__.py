"""Training: `train` over a `TrainingConfig` for classifiers and dual
encoders, and the building blocks it uses (optimizer schedule, loss,
resumable callbacks)."""

from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.trainer import train
from keras_sparse_moe.recipes.training import SparseCategoricalCrossentropyWithSmoothing
from keras_sparse_moe.recipes.training import make_callbacks
from keras_sparse_moe.recipes.training import make_optimizer
from keras_sparse_moe.recipes.training import make_schedule

__all__ = [
    "SparseCategoricalCrossentropyWithSmoothing", "TrainingConfig", "make_callbacks",
    "make_optimizer", "make_schedule", "train",
]
