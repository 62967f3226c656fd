"""The public names of `keras_sparse_moe` (the package re-exports them).

Importing this module imports Keras and every part of the package, and
registers the serializable layers, models and losses that saved models refer to.
"""

from keras_sparse_moe import data
from keras_sparse_moe import distribution
from keras_sparse_moe import layers
from keras_sparse_moe import models
from keras_sparse_moe import presets
from keras_sparse_moe import recipes  # registers the recipe losses that saved models refer to
from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import Router
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.layers import register_router

from keras_sparse_moe.data import DatasetInfo
from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import build_image_text_datasets
from keras_sparse_moe.data import load_dataset
from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import make_pipeline
from keras_sparse_moe.export import export_dual_encoder
from keras_sparse_moe.export import export_litert
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models import MoEViTImageConverter
from keras_sparse_moe.presets import from_preset
from keras_sparse_moe.profile import ModelProfile
from keras_sparse_moe.profile import profile
from keras_sparse_moe.profile import profile_config
from keras_sparse_moe.upcycle import upcycle
from keras_sparse_moe.presets import list_presets
from keras_sparse_moe.presets import register_preset
from keras_sparse_moe.presets import save_to_preset
from keras_sparse_moe.recipes import TrainingConfig
from keras_sparse_moe.recipes import train

