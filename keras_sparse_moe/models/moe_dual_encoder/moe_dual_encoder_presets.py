"""Architecture presets of the MoE dual-encoder family (no pretrained
weights ship, except `limoe_tiny_digits`)."""

import math

from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_contrastive import (
    MoEDualEncoderContrastive,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
    MoEDualEncoderPreprocessor,
)
from keras_sparse_moe.models.preset_conventions import NO_WEIGHTS
from keras_sparse_moe.models.preset_conventions import DIGITS_SCALING
from keras_sparse_moe.models.preset_conventions import RGB_SCALING
from keras_sparse_moe.models.preset_conventions import scaled_preprocessor
from keras_sparse_moe.presets import register_preset

LIMOE_PAPER = (
    "Mustafa et al. 2022, Multimodal Contrastive Learning with LIMoE: the Language-Image "
    "Mixture of Experts, https://arxiv.org/abs/2206.02770"
)

rgb_preprocessor = scaled_preprocessor(MoEDualEncoderPreprocessor, RGB_SCALING)
# The embedded digits (values 0..16) -> [0, 1].
digits_preprocessor = scaled_preprocessor(MoEDualEncoderPreprocessor, DIGITS_SCALING)

# Project defaults for the LIMoE entropy losses (the paper tunes the weights
# and the global threshold per setting; these are not the paper's values).
ENTROPY_DEFAULTS = {
    "local_entropy_weight": 0.01,
    "global_entropy_weight": 0.01,
    "global_entropy_threshold": math.log(2.0),
}


def _limoe(image_shape, patch_size, num_layers, num_heads, hidden_dim, mlp_dim):
    """Config of a LIMoE preset: the given tower shape; the shipped 413-token
    caption vocabulary and 16 text tokens; 8 experts with top-1 token-choice
    routing in every other block; mean image and end-token text pooling; the
    softmax loss and `ENTROPY_DEFAULTS`."""
    return {
        "vocabulary_size": 413,
        "image_shape": image_shape,
        "patch_size": patch_size,
        "max_sequence_length": 16,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "mlp_dim": mlp_dim,
        "embedding_dim": hidden_dim,
        "num_experts": 8,
        "top_k": 1,
        "moe_layers": "every_2",
        "image_pooling": "gap",
        "text_pooling": "eos",
        "contrastive_loss": "softmax",
        **ENTROPY_DEFAULTS,
    }


presets = {
    "limoe_b16_e8_k1": {
        "config": _limoe((224, 224, 3), 16, num_layers=12, num_heads=12, hidden_dim=768,
                         mlp_dim=3072),
        "preprocessor": rgb_preprocessor,
        "description": (
            "LIMoE-B/16 layout: one shared ViT-B/16 tower (12 blocks, width 768, MLP 3072, "
            "12 heads, patch 16, 224x224 RGB images; text of 16 tokens) for images and "
            "text, 8 experts with top-1 token-choice routing in every other block (1, 3, "
            "..., 11), per-modality routing groups, softmax contrastive loss, LIMoE local "
            "and thresholded global entropy losses (project default weights 0.01, "
            "threshold log 2). Expert count, MoE placement, entropy-loss and capacity "
            "settings are unverified against the paper and the published LIMoE-B/16 is "
            "larger (~0.5B parameters; docs/models.md). The shipped 413-token vocabulary "
            "is for short captions only. " + NO_WEIGHTS
        ),
    },
    "limoe_tiny": {
        "config": _limoe((8, 8, 1), 2, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128),
        "preprocessor": digits_preprocessor,
        "description": (
            "Tiny CPU LIMoE for 8x8 grayscale digits (scikit-learn's load_digits, values "
            "0..16) and short captions such as 'a photo of the digit seven.': one shared "
            "tower of 4 blocks, width 64, MLP 128, 4 heads, patch 2 (16 image tokens), 16 "
            "text tokens, 8 experts top-1 in blocks 1 and 3 (~0.4M parameters). LIMoE "
            "architecture at toy scale. " + NO_WEIGHTS
        ),
    },
}


def register_moe_dual_encoder_presets():
    """Register the presets above (called when the family is imported)."""
    for name, preset in presets.items():
        register_preset(
            name,
            family="moe_dual_encoder",
            description=preset["description"],
            paper=LIMOE_PAPER,
            backbone_cls=LIMoEBackbone,
            backbone_config=preset["config"],
            task_cls=MoEDualEncoderContrastive,
            preprocessor=preset["preprocessor"],
            overwrite=True,
        )
    # Trained weights shipped in keras_sparse_moe/presets_data/ (docs/results.md).
    register_preset(
        "limoe_tiny_digits",
        family="moe_dual_encoder",
        description=(
            "limoe_tiny image-text dual encoder for the embedded handwritten digits, "
            "trained contrastively on the training split with template captions: zero-shot "
            "test-split accuracy 0.928 (333/359; samples 1438..1796, never trained on) from "
            "text prompts only (docs/results.md). Takes raw 8x8x1 digits with values 0..16. "
            "Weights ship in the package (~1.8 MB)."
        ),
        paper=LIMOE_PAPER,
        weights="limoe_tiny_digits",
        overwrite=True,
    )
