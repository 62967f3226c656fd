"""Training recipes: optimizer schedules, losses and callbacks for `fit`."""

from keras_sparse_moe.recipes.training import SparseCategoricalCrossentropyWithSmoothing
from keras_sparse_moe.recipes.training import make_callbacks
from keras_sparse_moe.recipes.training import make_optimizer
from keras_sparse_moe.recipes.training import make_schedule

__all__ = ["SparseCategoricalCrossentropyWithSmoothing", "make_callbacks", "make_optimizer", "make_schedule"]
