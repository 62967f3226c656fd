"""Converters from other projects' checkpoints to keras-hub presets."""

from keras_sparse_moe.convert.flax_checkpoint import CheckpointError
from keras_sparse_moe.convert.flax_checkpoint import read_checkpoint
from keras_sparse_moe.convert.vmoe import build_classifier
from keras_sparse_moe.convert.vmoe import convert_vmoe

__all__ = ["CheckpointError", "build_classifier", "convert_vmoe", "read_checkpoint"]
