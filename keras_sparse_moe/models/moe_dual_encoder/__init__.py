"""MoE image-text dual encoders (LIMoE single tower, MoE two towers):
backbones, contrastive and zero-shot tasks, tokenizer, preprocessing,
losses and architecture presets."""

from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import SigmoidContrastiveLoss
from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import SoftmaxContrastiveLoss
from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import sigmoid_contrastive_loss
from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import softmax_contrastive_loss
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ClassEmbeddings
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ContrastiveHead
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ModalityEmbedding
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import TokenPooling
from keras_sparse_moe.models.moe_dual_encoder.entropy_losses import global_entropy
from keras_sparse_moe.models.moe_dual_encoder.entropy_losses import global_entropy_loss
from keras_sparse_moe.models.moe_dual_encoder.entropy_losses import limoe_entropy_loss
from keras_sparse_moe.models.moe_dual_encoder.entropy_losses import local_entropy
from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder.load_dual_encoder import load_dual_encoder
from keras_sparse_moe.models.moe_dual_encoder.modality_encoder_block import (
    ModalityEncoderBlock,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_contrastive import (
    MoEDualEncoderContrastive,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_image_converter import (
    MoEDualEncoderImageConverter,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_params import limoe_param_counts
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
    MoEDualEncoderPreprocessor,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_presets import (
    register_moe_dual_encoder_presets,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_tokenizer import (
    MoEDualEncoderTokenizer,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_zero_shot_classifier import (
    MoEDualEncoderZeroShotClassifier,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_text_encoder import MoETextEncoder
from keras_sparse_moe.models.moe_dual_encoder.moe_two_tower_backbone import MoETwoTowerBackbone
from keras_sparse_moe.models.moe_dual_encoder.per_backbone_preprocessing import (
    LIMoEImageConverter,
)
from keras_sparse_moe.models.moe_dual_encoder.per_backbone_preprocessing import LIMoETokenizer
from keras_sparse_moe.models.moe_dual_encoder.per_backbone_preprocessing import (
    MoETwoTowerImageConverter,
)
from keras_sparse_moe.models.moe_dual_encoder.per_backbone_preprocessing import (
    MoETwoTowerTokenizer,
)
from keras_sparse_moe.models.moe_dual_encoder.prompt_embeddings import class_text_embeddings
from keras_sparse_moe.models.moe_dual_encoder.prompt_embeddings import pack_prompts

register_moe_dual_encoder_presets()

__all__ = [
    "ClassEmbeddings",
    "ContrastiveHead",
    "LIMoEBackbone",
    "LIMoEImageConverter",
    "LIMoETokenizer",
    "ModalityEmbedding",
    "ModalityEncoderBlock",
    "MoEDualEncoderBackbone",
    "MoEDualEncoderContrastive",
    "MoEDualEncoderImageConverter",
    "MoEDualEncoderPreprocessor",
    "MoEDualEncoderTokenizer",
    "MoEDualEncoderZeroShotClassifier",
    "MoETextEncoder",
    "MoETwoTowerBackbone",
    "MoETwoTowerImageConverter",
    "MoETwoTowerTokenizer",
    "SigmoidContrastiveLoss",
    "SoftmaxContrastiveLoss",
    "TokenPooling",
    "class_text_embeddings",
    "global_entropy",
    "global_entropy_loss",
    "limoe_entropy_loss",
    "limoe_param_counts",
    "load_dual_encoder",
    "local_entropy",
    "pack_prompts",
    "sigmoid_contrastive_loss",
    "softmax_contrastive_loss",
]
