"""Presets of the MoE-ViT family: architectures (the V-MoE ones with the
hyper-parameters of vmoe's published configs, and one per published vmoe
checkpoint, which `keras-sparse-moe convert vmoe` fills) and the shipped
digit classifiers."""

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


def _vit(patch_size, num_layers, hidden_dim, mlp_dim, num_heads, image_size=224):
    return {
        "image_shape": (image_size, image_size, 3),
        "patch_size": patch_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "mlp_dim": mlp_dim,
    }


def _vmoe(patch_size, num_layers, hidden_dim, mlp_dim, num_heads, moe_layers, image_size=224,
          capacity_factor=1.05, eval_capacity_factor=None, expert_dropout=0.0):
    """A V-MoE backbone config as vmoe's `vmoe/configs/vmoe_paper/common.py`
    (`get_vmoe_config`) writes it: 8 experts, top-2 token choice, routing
    groups of 8 images (vmoe's `group_size = 8 * tokens per image`),
    capacity `ceil(group_size * 2 * cf / 8)` rounded up to a multiple of 4
    (vmoe's dispatcher defaults), no batch priority, importance and load
    losses of weight 0.005 computed as vmoe computes them, tanh GELU, no
    dropout outside the experts."""
    tokens = (image_size // patch_size) ** 2 + 1  # patches + class token
    return {
        **_vit(patch_size, num_layers, hidden_dim, mlp_dim, num_heads, image_size),
        "num_experts": 8,
        "top_k": 2,
        "moe_layers": moe_layers,
        "capacity_factor": capacity_factor,
        "eval_capacity_factor": eval_capacity_factor,
        "mlp_activation": "gelu_approximate",
        "pooling": "token",
        "moe_kwargs": {
            "group_size": 8 * tokens,
            "batch_priority": False,
            "noise_std": 1.0,
            "importance_loss_weight": 0.005,
            "load_loss_weight": 0.005,
            "load_balancing_loss_weight": 0.0,
            "aux_loss_convention": "vmoe",
            "capacity_rounding": "ceil",
            "capacity_multiple_of": 4,
            "capacity_formula": "vmoe",
            "dropout": expert_dropout,
            "dropout_placement": "vmoe",
        },
    }


VMOE_ROUTING = (
    "top-2 token choice as in vmoe's paper configs (routing groups of 8 images, capacity "
    "rounded up to a multiple of 4, no batch priority, importance and load losses 0.005, "
    "tanh GELU)"
)
# vmoe's configs: vmoe/configs/vmoe_paper/vmoe_s32_last2_ilsvrc2012_randaug_light1.py
# (S/32) and pretrain_imagenet21k.py (B/16, L/16).
VMOE_S32 = _vmoe(32, 8, 512, 2048, 8, "last_2", eval_capacity_factor=4.0, expert_dropout=0.2)
VMOE_B16 = _vmoe(16, 12, 768, 3072, 12, "every_2")
VMOE_L16 = _vmoe(16, 24, 1024, 4096, 16, "every_2")
CONVERT = (
    "To fill it, download the checkpoint's files and run `keras-sparse-moe convert vmoe "
    "DIR/{prefix} --output OUT --preset {name}` (docs/convert.md)."
)

backbone_presets = {
    "vmoe_s32_e8_k2_last2": {
        "config": VMOE_S32,
        "description": (
            "V-MoE-S/32: ViT-S/32 as vmoe defines it (8 blocks, width 512, MLP 2048, 8 heads, "
            "224x224 images) with 8 experts in the last 2 odd blocks (5, 7), "
            f"{VMOE_ROUTING}; capacity factor 1.05 in training and 4.0 at evaluation, "
            "expert dropout 0.2 (vmoe_s32_last2_ilsvrc2012_randaug_light1.py). " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
    "vmoe_b16_e8_k2_every2": {
        "config": VMOE_B16,
        "description": (
            "V-MoE-B/16: ViT-B/16 (12 blocks, width 768, MLP 3072, 12 heads, 224x224 "
            f"images) with 8 experts in every other block, {VMOE_ROUTING}; capacity factor "
            "1.05 (vmoe's pretrain_imagenet21k.py). " + NO_WEIGHTS
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    },
    "vmoe_l16_e8_k2_every2": {
        "config": VMOE_L16,
        "description": (
            "V-MoE-L/16: ViT-L/16 (24 blocks, width 1024, MLP 4096, 16 heads, 224x224 "
            f"images) with 8 experts in every other block (~1.0B parameters), {VMOE_ROUTING}; "
            "capacity factor 1.05 (vmoe's pretrain_imagenet21k.py). " + NO_WEIGHTS
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
            # vmoe/projects/soft_moe/configs/common.py (get_vit_config,
            # get_vmoe_soft_router_config): GAP head, qk-normalised attention,
            # flax's tanh GELU, one routing group per image, tokens and expert
            # outputs rounded to bfloat16 around the experts.
            "pooling": "gap",
            "attention_qk_norm": True,
            "mlp_activation": "gelu_approximate",
            "moe_kwargs": {"slots_per_expert": 1, "bfloat16_dispatch": True},
        },
        "description": (
            "Soft MoE-B/16: ViT-B/16 (224x224 images) whose last 6 blocks (6-11) are "
            "Soft MoE layers with 128 experts of 1 slot each, as vmoe's Soft MoE configs "
            "build it (vmoe/projects/soft_moe: global average pooling, qk-normalised "
            "attention, tanh GELU, one routing group per image, bfloat16 dispatch); "
            "a Soft MoE classifier trained with vmoe converts into it "
            "(`keras-sparse-moe convert vmoe`, docs/convert.md). " + NO_WEIGHTS
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


def _checkpoint_preset(name, prefix, config, num_classes, representation_size, what):
    return {
        "config": config,
        "task_config": {"num_classes": num_classes, "representation_size": representation_size},
        "description": (
            f"{what} The architecture and routing of vmoe's checkpoint "
            f"gs://vmoe_checkpoints/{prefix}; the preset holds the architecture only (no "
            "weights ship). "
            + CONVERT.format(prefix=prefix, name=name)
        ),
        "paper": VMOE_PAPER,
        "preprocessor": rgb_preprocessor,
    }


# The published V-MoE checkpoints (vmoe's README), each with the config that
# trained it (vmoe/configs/vmoe_paper/): the architecture, and the routing of
# that config (the fine-tuned ones: capacity factor 1.5, no pre-logits).
checkpoint_presets = {
    "vmoe_s32_ilsvrc2012": _checkpoint_preset(
        "vmoe_s32_ilsvrc2012", "vmoe_s32_last2_ilsvrc2012_randaug_light1", VMOE_S32, 1000, 512,
        "V-MoE-S/32 trained from scratch on ILSVRC2012 (300 epochs, 224x224, 1000 classes, "
        "512-wide pre-logits), as vmoe_s32_e8_k2_last2.",
    ),
    "vmoe_s32_ilsvrc2012_384": _checkpoint_preset(
        "vmoe_s32_ilsvrc2012_384", "vmoe_s32_last2_ilsvrc2012_randaug_light1_ft_ilsvrc2012",
        _vmoe(32, 8, 512, 2048, 8, "last_2", image_size=384, capacity_factor=1.5), 1000, None,
        "V-MoE-S/32 of vmoe_s32_ilsvrc2012 fine-tuned on ILSVRC2012 at 384x384 (1000 classes, "
        "capacity factor 1.5).",
    ),
    "vmoe_b16_imagenet21k": _checkpoint_preset(
        "vmoe_b16_imagenet21k", "vmoe_b16_imagenet21k_randaug_strong", VMOE_B16, 21843, None,
        "V-MoE-B/16 trained from scratch on ImageNet-21k (224x224, 21,843 classes), as "
        "vmoe_b16_e8_k2_every2.",
    ),
    "vmoe_b16_ilsvrc2012_384": _checkpoint_preset(
        "vmoe_b16_ilsvrc2012_384", "vmoe_b16_imagenet21k_randaug_strong_ft_ilsvrc2012",
        _vmoe(16, 12, 768, 3072, 12, "every_2", image_size=384, capacity_factor=1.5), 1000, None,
        "V-MoE-B/16 of vmoe_b16_imagenet21k fine-tuned on ILSVRC2012 at 384x384 (1000 "
        "classes, capacity factor 1.5).",
    ),
}

# Trained weights shipped in keras_sparse_moe/presets_data/<name>/ (docs/results.md).
weight_presets = {
    "moe_vit_tiny_digits": (
        "moe_vit_tiny classifying the embedded handwritten digits: test-split accuracy "
        "0.992 (356/359; samples 1438..1796, never trained on; docs/results.md). Trained "
        "from moe_vit_tiny_synthetic_digits on the digits' training split together with "
        "optdigits-train (3,823 digits by 30 other writers). Takes raw 8x8x1 digits with "
        "values 0..16. Weights ship in the package (1.6 MB)."
    ),
    "moe_vit_tiny_synthetic_digits": (
        "moe_vit_tiny trained on 50,000 synthetic handwritten digits only (pen-stroke "
        "templates and fonts in the UCI digits' format): 0.991 on its synthetic test "
        "split, 0.856 of the real digits' training split read without training on any "
        "(docs/results.md). A starting point for fine-tuning on digit-like data (e.g. "
        "learning rate 5e-4). Takes raw 8x8x1 digits with values 0..16. Weights ship in "
        "the package (1.6 MB)."
    ),
}


def register_moe_vit_presets():
    """Register the presets above (called when `keras_sparse_moe.models` is
    imported)."""
    for name, preset in {**backbone_presets, **classifier_presets, **checkpoint_presets}.items():
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
    for name, description in weight_presets.items():
        register_preset(
            name,
            family="moe_vit",
            description=description,
            paper=VMOE_PAPER,
            weights=name,
            overwrite=True,
        )
