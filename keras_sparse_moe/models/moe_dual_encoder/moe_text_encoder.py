"""Transformer text encoder with optional sparse MoE blocks."""

import re

import keras
import keras_hub
from keras_hub.models import Backbone

from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import entropy_losses_config
from keras_sparse_moe.models.moe_dual_encoder.modality_encoder_block import (
    ModalityEncoderBlock,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    padding_attention_mask,
)
from keras_sparse_moe.models.encoder_arguments import check_encoder_arguments
from keras_sparse_moe.models.encoder_arguments import shared_encoder_config
from keras_sparse_moe.models.encoder_arguments import store_encoder_arguments
from keras_sparse_moe.presets import PresetMixin
from keras_sparse_moe.utils.validation import check_int

# Layer names before they had the `text_` prefix (kept out of the paths of
# an image tower's layers, e.g. `MoEViTBackbone`'s `encoder_block_0`).
_UNPREFIXED = re.compile(r"^(encoder_block_\d+|final_norm|embedding_dropout)(/|$)")


def _prefixed_policy_map(dtype):
    """A serialized quantization `DTypePolicyMap` that names the blocks by
    their old unprefixed paths (no `text_encoder_block_*` key), with the
    `text_` prefix added; any other `dtype` unchanged."""
    if not (isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicyMap"):
        return dtype
    policies = dtype.get("config", {}).get("policy_map", {})
    if any(key.startswith("text_encoder_block_") for key in policies):
        return dtype  # current names (maybe beside an image tower's layers)
    renamed = {_UNPREFIXED.sub(r"text_\1\2", key): value for key, value in policies.items()}
    return {**dtype, "config": {**dtype["config"], "policy_map": renamed}}


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoETextEncoder(PresetMixin, Backbone):
    """Pre-LN transformer over caption tokens, the text tower of
    `MoETwoTowerBackbone`; blocks in `moe_layers` have a sparse MoE MLP.

    Token and learned position embeddings, `num_layers` blocks with text
    padding masked out of attention, and a final LayerNorm. Its layers are
    named with a `text_` prefix (`text_embedding`, `text_encoder_block_{i}`,
    `text_final_norm`), so that beside an image tower in
    `MoETwoTowerBackbone` every layer has its own path (as quantization's
    `DTypePolicyMap` needs). Output: the
    token sequence `(batch, max_sequence_length, hidden_dim)`. With MoE
    blocks, training adds the MoE auxiliary losses and, if their weights are
    non-zero, the LIMoE entropy losses over the real (unpadded) tokens.

    Args:
        vocabulary_size: int >= 1.
        max_sequence_length: int >= 1 (fixed).
        num_layers, num_heads, hidden_dim, mlp_dim: transformer shape.
        num_experts, top_k, moe_layers, router, capacity_factor,
            eval_capacity_factor, moe_kwargs: as `MoEViTBackbone`; the
            default `moe_layers="none"` is a dense text transformer.
        local_entropy_weight, global_entropy_weight: floats >= 0.
        global_entropy_threshold: None or float >= 0 (nats).
        dropout_rate, attention_dropout: floats in [0, 1).
        layer_norm_epsilon: float > 0.
        dtype: None or a dtype policy.

    Example:
    >>> import numpy as np
    >>> encoder = MoETextEncoder(vocabulary_size=30, max_sequence_length=5,
    ...     num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
    ...     num_experts=4, moe_layers="every_2")
    >>> tuple(encoder({"token_ids": np.ones((2, 5), "int32"),
    ...                "padding_mask": np.ones((2, 5), "int32")}).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        vocabulary_size,
        max_sequence_length=16,
        num_layers=12,
        num_heads=8,
        hidden_dim=512,
        mlp_dim=2048,
        num_experts=8,
        top_k=1,
        moe_layers="none",
        router="token_choice",
        capacity_factor=1.25,
        eval_capacity_factor=None,
        moe_kwargs=None,
        local_entropy_weight=0.0,
        global_entropy_weight=0.0,
        global_entropy_threshold=None,
        dropout_rate=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        vocabulary_size = check_int("vocabulary_size", vocabulary_size, minimum=1)
        max_sequence_length = check_int("max_sequence_length", max_sequence_length, minimum=1)
        args = check_encoder_arguments(
            num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
            mlp_dim=mlp_dim, num_experts=num_experts, top_k=top_k, router=router,
            capacity_factor=capacity_factor, eval_capacity_factor=eval_capacity_factor,
            moe_layers=moe_layers, moe_kwargs=moe_kwargs, dropout_rate=dropout_rate,
            attention_dropout=attention_dropout, layer_norm_epsilon=layer_norm_epsilon,
        )
        num_layers, num_heads, hidden_dim, mlp_dim = (
            args.num_layers, args.num_heads, args.hidden_dim, args.mlp_dim
        )
        dropout_rate, attention_dropout = args.dropout_rate, args.attention_dropout
        layer_norm_epsilon = args.layer_norm_epsilon
        text_losses = {"text": entropy_losses_config(
            local_entropy_weight, global_entropy_weight, global_entropy_threshold
        )["text"]}

        embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=max_sequence_length,
            embedding_dim=hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            name="text_embedding",
        )
        embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="text_embedding_dropout"
        )
        blocks = []
        for index, moe in enumerate(args.block_moe):
            blocks.append(
                ModalityEncoderBlock(
                    num_heads=num_heads,
                    mlp_dim=mlp_dim,
                    moe=moe,
                    entropy_losses=text_losses if moe is not None else None,
                    dropout_rate=dropout_rate,
                    attention_dropout=attention_dropout,
                    layer_norm_epsilon=layer_norm_epsilon,
                    dtype=dtype,
                    name=f"text_encoder_block_{index}",
                )
            )
        final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="text_final_norm"
        )

        token_ids = keras.Input(shape=(max_sequence_length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(max_sequence_length,), dtype="int32", name="padding_mask")
        attention_mask = padding_attention_mask(padding_mask)
        x = embedding_dropout(embedding(token_ids))
        for block in blocks:
            x = block(x, attention_mask=attention_mask, token_mask=padding_mask, modality="text")
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=final_norm(x),
            dtype=dtype,
            **kwargs,
        )

        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        store_encoder_arguments(self, args, moe_layers, moe_kwargs)
        self.local_entropy_weight = local_entropy_weight
        self.global_entropy_weight = global_entropy_weight
        self.global_entropy_threshold = global_entropy_threshold

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sequence_length": self.max_sequence_length,
                **shared_encoder_config(self),
                "local_entropy_weight": self.local_entropy_weight,
                "global_entropy_weight": self.global_entropy_weight,
                "global_entropy_threshold": self.global_entropy_threshold,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # A quantized encoder saved before the `text_` prefix names its layers
        # in its DTypePolicyMap by the old paths.
        config = {**config, "dtype": _prefixed_policy_map(config.get("dtype"))}
        return super().from_config(config)
