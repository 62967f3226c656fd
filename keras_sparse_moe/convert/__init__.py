"""Converters from other projects' checkpoints to keras-hub presets."""

from keras_sparse_moe.convert.flax_checkpoint import Checkpoint
from keras_sparse_moe.convert.flax_checkpoint import CheckpointError
from keras_sparse_moe.convert.flax_checkpoint import open_checkpoint
from keras_sparse_moe.convert.flax_checkpoint import read_checkpoint
from keras_sparse_moe.convert.vmoe import build_classifier
from keras_sparse_moe.convert.vmoe import convert_vmoe

__all__ = [
    "Checkpoint", "CheckpointError", "build_classifier", "convert_vmoe", "open_checkpoint",
    "read_checkpoint",
]
