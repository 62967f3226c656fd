"""MoE vision transformers (V-MoE, Soft MoE ViT): backbone, classifier task,
preprocessing and architecture presets."""

from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.models.moe_vit.moe_vit_image_classifier import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit.moe_vit_image_classifier_preprocessor import (
    MoEViTImageClassifierPreprocessor,
)
from keras_sparse_moe.models.moe_vit.moe_vit_image_converter import MoEViTImageConverter
from keras_sparse_moe.models.moe_vit.moe_vit_params import moe_vit_param_counts
from keras_sparse_moe.models.moe_vit.moe_vit_presets import register_moe_vit_presets

register_moe_vit_presets()

__all__ = [
    "MoEViTBackbone",
    "MoEViTImageClassifier",
    "MoEViTImageClassifierPreprocessor",
    "MoEViTImageConverter",
    "moe_vit_param_counts",
    "resolve_moe_layers",
]
