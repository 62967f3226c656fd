"""Parameter and FLOP profiling of MoE models, below the model families.

The families' backbones compute their profile from a config with the
analytic helpers of `config_arithmetic`, and the generic profilers
(`profile`, `profile_config`) never import a model. The public entry
point, with the counting conventions, is `keras_sparse_moe.profile`.
"""

from keras_sparse_moe.profiling import keras_hub_vit  # registers ViTBackbone's profiler
from keras_sparse_moe.profiling.config_profile import config_profiler
from keras_sparse_moe.profiling.config_profile import profile_config
from keras_sparse_moe.profiling.config_profile import register_config_profiler
from keras_sparse_moe.profiling.model_profile import profile
from keras_sparse_moe.profiling.results import ModelProfile
from keras_sparse_moe.profiling.results import MoELayerProfile

__all__ = [
    "ModelProfile",
    "MoELayerProfile",
    "config_profiler",
    "keras_hub_vit",
    "profile",
    "profile_config",
    "register_config_profiler",
]
