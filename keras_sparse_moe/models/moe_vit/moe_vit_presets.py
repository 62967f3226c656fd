"""Architecture presets of the MoE-ViT family (no pretrained weights ship)."""

from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.models.moe_vit.moe_vit_image_classifier import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit.moe_vit_image_classifier_preprocessor import (
    MoEViTImageClassifierPreprocessor,
)
from keras_sparse_moe.models.preset_conventions import NO_WEIGHTS
from keras_sparse_moe.models.preset_conventions import DIGITS_SCALING
from keras_sparse_moe.models.preset_conventions import RGB_SCALING
from keras_sparse_moe.models.preset_conventions import scaled_preprocessor
from keras_sparse_moe.presets import register_preset

VMOE_PAPER = (
    "Riquelme et al. 2021, Scaling Vision with Sparse Mixture of Experts, "
    "https://arxiv.org/abs/2106.05974"
)
SOFT_MOE_PAPER = (
    "Puigcerver et al. 2023, From Sparse to Soft Mixtures of Experts, "
    "https://arxiv.org/abs/2308.00951"
)
rgb_preprocessor = scaled_preprocessor(MoEViTImageClassifierPreprocessor, RGB_SCALING)
# The embedded digits (values 0..16) -> [0, 1].
digits_preprocessor = scaled_preprocessor(MoEViTImageClassifierPreprocessor, DIGITS_SCALING)


def _vit(patch_size, num_layers, hidden_dim, mlp_dim, num_heads):
    return {
        "image_shape": (224, 224, 3),
        "patch_size": patch_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "mlp_dim": mlp_dim,
    }


backbone_presets = {
    "vmoe_s32_e8_k2_last2": {
        "config": {
            **_vit(32, 8, 512, 2048, 8),
            "num_experts": 8,
            "top_k": 2,
            "moe_layers": "last_2",
        },
        "description": (
            "V-MoE-S/32: ViT-S/32 (8 blocks, width 512, MLP 2048, 8 heads, 224x224 "
            "images) with 8 experts, top-2 token-choice routing with Batch Priority "
            "Routing, MoE in the last 2 odd blocks (5, 7). " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
    "vmoe_b16_e8_k2_every2": {
        "config": {
            **_vit(16, 12, 768, 3072, 12),
            "num_experts": 8,
            "top_k": 2,
            "moe_layers": "every_2",
        },
        "description": (
            "V-MoE-B/16: ViT-B/16 (12 blocks, width 768, MLP 3072, 12 heads, 224x224 "
            "images) with 8 experts, top-2 token-choice routing, MoE in every other "
            "block. " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
    "vmoe_l16_e8_k2_every2": {
        "config": {
            **_vit(16, 24, 1024, 4096, 16),
            "num_experts": 8,
            "top_k": 2,
            "moe_layers": "every_2",
        },
        "description": (
            "V-MoE-L/16: ViT-L/16 (24 blocks, width 1024, MLP 4096, 16 heads, 224x224 "
            "images) with 8 experts, top-2 token-choice routing, MoE in every other "
            "block (~1.0B parameters). " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
    "soft_moe_b16_e128_last6": {
        "config": {
            **_vit(16, 12, 768, 3072, 12),
            "num_experts": 128,
            "top_k": 1,
            "router": "soft",
            "moe_layers": [6, 7, 8, 9, 10, 11],
            "moe_kwargs": {"slots_per_expert": 1},
        },
        "description": (
            "Soft MoE-B/16: ViT-B/16 (224x224 images) whose last 6 blocks (6-11) are "
            "Soft MoE layers with 128 experts of 1 slot each. " + NO_WEIGHTS
        ),
        "paper": SOFT_MOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
}

classifier_presets = {
    "moe_vit_tiny": {
        "config": {
            # The 8x8 digits are upsampled to 16x16 (by the preprocessor): 4x4
            # patches then cover 2x2 original pixels each with overlap from the
            # interpolation, and augmentation (rotation, zoom) works on the finer grid.
            "image_shape": (16, 16, 1),
            "patch_size": 4,
            "num_layers": 4,
            "num_heads": 4,
            "hidden_dim": 64,
            "mlp_dim": 128,
            "num_experts": 8,
            "top_k": 2,
            "moe_layers": "every_2",
            "pooling": "gap",
        },
        "task_config": {"num_classes": 10},
        "description": (
            "Tiny CPU V-MoE classifier for scikit-learn's 8x8 grayscale digits "
            "(values 0..16, upsampled to 16x16 by the preprocessor): patch 4 (16 "
            "tokens, mean-pooled), 4 blocks of width 64, MLP 128, 4 heads, 8 experts "
            "top-2 in blocks 1 and 3, 10 classes (~0.37M parameters). Architecture of "
            "V-MoE at toy scale; trained weights: moe_vit_tiny_digits. " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": digits_preprocessor,
    },
}


MOE_VIT_TINY_DIGITS = {
    "family": "moe_vit",
    "description": (
        "moe_vit_tiny classifying the embedded handwritten digits: test-split accuracy "
        "0.992 (356/359; samples 1438..1796, never trained on; docs/results.md). Trained "
        "from moe_vit_tiny_synthetic_digits on the digits' training split together with "
        "optdigits-train (3,823 digits by 30 other writers). Takes raw 8x8x1 digits with "
        "values 0..16. Weights ship in the package (1.6 MB)."
    ),
    "paper": VMOE_PAPER,
}


MOE_VIT_TINY_SYNTHETIC_DIGITS = {
    "family": "moe_vit",
    "description": (
        "moe_vit_tiny trained on 50,000 synthetic handwritten digits only (pen-stroke "
        "templates and fonts in the UCI digits' format): 0.991 on its synthetic test "
        "split, 0.856 of the real digits' training split read without training on any "
        "(docs/results.md). A starting point for fine-tuning on digit-like data (e.g. "
        "learning rate 5e-4). Takes raw 8x8x1 digits with values 0..16. Weights ship in "
        "the package (1.6 MB)."
    ),
    "paper": VMOE_PAPER,
}


def register_moe_vit_presets():
    """Register the presets above (called when `keras_sparse_moe.models` is
    imported)."""
    for name, preset in {**backbone_presets, **classifier_presets}.items():
        is_task = "task_config" in preset
        register_preset(
            name,
            family="moe_vit",
            description=preset["description"],
            paper=preset["paper"],
            backbone_cls=MoEViTBackbone,
            backbone_config=preset["config"],
            task_cls=MoEViTImageClassifier if is_task else None,
            task_config=preset.get("task_config"),
            preprocessor=preset["preprocessor"],
            overwrite=True,
        )
    # Trained weights shipped in keras_sparse_moe/presets_data/ (docs/results.md).
    register_preset("moe_vit_tiny_digits", weights="moe_vit_tiny_digits", overwrite=True,
                    **MOE_VIT_TINY_DIGITS)
    register_preset("moe_vit_tiny_synthetic_digits", weights="moe_vit_tiny_synthetic_digits",
                    overwrite=True, **MOE_VIT_TINY_SYNTHETIC_DIGITS)
