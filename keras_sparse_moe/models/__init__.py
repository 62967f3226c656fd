"""Model families: keras-hub style backbones, tasks and their presets.

Importing this package registers every family's presets with
`keras_sparse_moe.presets`.
"""

from keras_sparse_moe.models import moe_dual_encoder
from keras_sparse_moe.models import moe_vit
from keras_sparse_moe.models.moe_vit import MoEViTBackbone
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models.moe_vit import MoEViTImageConverter

__all__ = [
    "moe_dual_encoder",
    "moe_vit",
    "MoEViTBackbone",
    "MoEViTImageClassifier",
    "MoEViTImageClassifierPreprocessor",
    "MoEViTImageConverter",
]
