"""Edge export: LiteRT (TFLite) models with builtin ops only."""

from keras_sparse_moe.export.litert import QUANTIZATION_MODES
from keras_sparse_moe.export.litert import LiteRTModel
from keras_sparse_moe.export.litert import export_litert
from keras_sparse_moe.export.litert import list_litert_ops

__all__ = ["QUANTIZATION_MODES", "LiteRTModel", "export_litert", "list_litert_ops"]
