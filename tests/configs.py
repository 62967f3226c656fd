"""The small configurations every test builds its models from, and their inputs.

One place for the tiny MoE-ViT, dual-encoder and SparseMoE settings, so that
tests do not copy them, and so that the session-scoped fixtures of
`tests/conftest.py` (one build per backend and test process) can be shared.
Each config is the cheapest one that still exercises the code path: two
blocks (one dense, one MoE for `moe_layers="every_2"`), several experts and,
for the ViT, a class token.

Use a config with overrides rather than editing it:
`MoEViTBackbone(**{**MOE_VIT, "pooling": "gap"})`.
"""

import numpy as np

# ------------------------------------------------------------------ layers
SPARSE_MOE = dict(num_experts=4, intermediate_dim=16, top_k=2)
"""`SparseMoE` keyword arguments; inputs of shape `SPARSE_MOE_INPUT_SHAPE`."""

SPARSE_MOE_INPUT_SHAPE = (2, 8, 12)
"""(batch, tokens, dim) for `SPARSE_MOE`: capacity 5 of 8 tokens at top-2."""

EXPERTS = dict(num_experts=4, intermediate_dim=16)
"""`Experts` keyword arguments; inputs `(num_experts, slots, dim)`."""

ENCODER_BLOCK = dict(num_heads=2, mlp_dim=16, moe={"num_experts": 4, "top_k": 2})
"""`MoETransformerEncoderBlock` keyword arguments; inputs `(2, 5, 8)`."""

ROUTERS = ("token_choice", "expert_choice", "soft")
"""The `router=` values of `SparseMoE`."""

# ------------------------------------------------------------------ MoE-ViT
MOE_VIT = dict(
    image_shape=(8, 8, 1),
    patch_size=4,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    mlp_dim=32,
    num_experts=4,
    top_k=2,
)
"""`MoEViTBackbone` keyword arguments: 2x2 patches plus a class token (5
tokens of width 16), blocks 0 dense and 1 MoE (the default `"every_2"`)."""

MOE_VIT_OVERRIDES = {"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2}
"""Overrides that shrink a registered MoE-ViT preset (e.g. `moe_vit_tiny`)
for the recipes: `load_classifier("moe_vit_tiny", overrides=MOE_VIT_OVERRIDES)`."""

MOE_VIT_CLI_OVERRIDES = [
    arg for key, value in MOE_VIT_OVERRIDES.items() for arg in ("--set", f"{key}={value}")
]
"""`MOE_VIT_OVERRIDES` as command-line `--set key=value` arguments."""

NUM_CLASSES = 3

# ------------------------------------------------------------ dual encoders
VOCABULARY_SIZE = 40
SEQUENCE_LENGTH = 6

LIMOE = dict(
    vocabulary_size=VOCABULARY_SIZE,
    image_shape=(8, 8, 1),
    patch_size=4,
    max_sequence_length=SEQUENCE_LENGTH,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    mlp_dim=16,
    embedding_dim=6,
    num_experts=4,
    top_k=1,
)
"""`LIMoEBackbone` keyword arguments (one tower shared by images and text)."""

LIMOE_PRESET_OVERRIDES = dict(num_layers=2, hidden_dim=8, mlp_dim=16, num_heads=2, embedding_dim=6)
"""Overrides that shrink the `limoe_tiny` preset (keeping its tokenizer and
image converter, so that it reads the digits' captions) for the recipes and
the command line: `from_preset("limoe_tiny", **LIMOE_PRESET_OVERRIDES)`; the
session fixture `small_limoe_preset` of `tests/conftest.py` saves it as a
preset directory."""

TWO_TOWER_VISION = dict(
    image_shape=(8, 8, 1), patch_size=4, num_layers=2, num_heads=2, hidden_dim=8,
    mlp_dim=16, num_experts=4,
)
"""`MoEViTBackbone` keyword arguments of the image tower of `MoETwoTowerBackbone`."""

TEXT_ENCODER = dict(
    vocabulary_size=VOCABULARY_SIZE,
    max_sequence_length=SEQUENCE_LENGTH,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    mlp_dim=16,
    num_experts=4,
    moe_layers="every_2",
)
"""`MoETextEncoder` keyword arguments (the text tower of `MoETwoTowerBackbone`)."""

TWO_TOWER_EMBEDDING_DIM = 6

# --------------------------------------------------------------- inputs
def images(batch=4, shape=(8, 8, 1), seed=0):
    """Random float32 images in [0, 1)."""
    return np.random.default_rng(seed).random((batch,) + tuple(shape)).astype("float32")


def tokens(batch=3, length=SEQUENCE_LENGTH, vocabulary_size=VOCABULARY_SIZE, seed=0):
    """Packed captions `{"token_ids", "padding_mask"}` of different lengths
    (the first full, the others padded), ids above the special tokens."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[1:, length - 2:] = 0
    mask[-1, 2:] = 0
    token_ids = (rng.integers(4, vocabulary_size, (batch, length)) * mask).astype("int32")
    return {"token_ids": token_ids, "padding_mask": mask}


def image_text_batch(batch=3, seed=0):
    """A dual-encoder batch `{"images", "token_ids", "padding_mask"}`."""
    return {"images": images(batch, LIMOE["image_shape"], seed), **tokens(batch, seed=seed)}


def sparse_moe_inputs(seed=0, shape=SPARSE_MOE_INPUT_SHAPE):
    """Random float32 tokens for `SPARSE_MOE`."""
    return np.random.default_rng(seed).normal(size=shape).astype("float32")
