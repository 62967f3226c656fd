"""Edge export: LiteRT (TFLite) models with builtin ops only."""

from keras_sparse_moe.export.litert import LITERT_INSTALL_HINT
from keras_sparse_moe.export.litert import QUANTIZATION_MODES
from keras_sparse_moe.export.litert import LiteRTModel
from keras_sparse_moe.export.litert import export_litert
from keras_sparse_moe.export.litert import list_litert_ops
from keras_sparse_moe.export.litert import litert_interpreter_available
from keras_sparse_moe.export.towers import evaluate_towers
from keras_sparse_moe.export.towers import export_dual_encoder

__all__ = [
    "LITERT_INSTALL_HINT",
    "QUANTIZATION_MODES",
    "LiteRTModel",
    "evaluate_towers",
    "export_dual_encoder",
    "export_litert",
    "list_litert_ops",
    "litert_interpreter_available",
]
