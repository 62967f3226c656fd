"""LIMoE: one shared MoE transformer for images and text."""

import numbers

import keras
import keras_hub
from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ModalityEmbedding
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import TokenPooling
from keras_sparse_moe.models.moe_dual_encoder.modality_encoder_block import (
    ModalityEncoderBlock,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    image_shape_check,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    padding_attention_mask,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    text_shape_checks,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import tower_model
from keras_sparse_moe.models.encoder_arguments import check_encoder_arguments
from keras_sparse_moe.models.encoder_arguments import check_image_shape
from keras_sparse_moe.models.encoder_arguments import shared_encoder_config
from keras_sparse_moe.models.encoder_arguments import store_encoder_arguments
from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.profiling.config_arithmetic import init_defaults
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

IMAGE_POOLINGS = {"token": "first", "gap": "mean"}
TEXT_POOLINGS = {"eos": "last", "mean": "mean"}
MODALITIES = ("image", "text")
# The arguments the shared tower has in common with a `MoEViTBackbone`.
_VIT_KEYS = (
    "image_shape", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim",
    "num_experts", "top_k", "moe_layers", "router", "capacity_factor",
    "eval_capacity_factor", "moe_kwargs",
)


def per_modality(name, value, allow_none=False):
    """A float (both modalities) or a dict {"image": x, "text": y} ->
    {"image": x, "text": y} of checked floats >= 0 (or None if allowed)."""
    if isinstance(value, dict):
        unknown = set(value) - set(MODALITIES)
        if unknown:
            raise ValueError(
                f"Argument `{name}` must be a number or a dict with keys among "
                f"{list(MODALITIES)}; received {value!r}."
            )
        values = {m: value.get(m, None if allow_none else 0.0) for m in MODALITIES}
    else:
        values = {m: value for m in MODALITIES}
    return {
        m: check_float(f"{name}[{m!r}]" if isinstance(value, dict) else name, v,
                       minimum=0.0, allow_none=allow_none)
        for m, v in values.items()
    }


def entropy_losses_config(local_weight, global_weight, threshold):
    """Per-modality entropy loss settings for `ModalityEncoderBlock`."""
    local = per_modality("local_entropy_weight", local_weight)
    glob = per_modality("global_entropy_weight", global_weight)
    tau = per_modality("global_entropy_threshold", threshold, allow_none=True)
    return {m: {"local": local[m], "global": glob[m], "threshold": tau[m]} for m in MODALITIES}


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class LIMoEBackbone(MoEDualEncoderBackbone):
    """LIMoE single-tower image-text dual encoder (Mustafa et al. 2022,
    "Multimodal Contrastive Learning with LIMoE", arXiv:2206.02770).

    Images are cut into patches (strided `Conv2D`, optional class token,
    learned positions) and captions embedded (token + learned position
    embeddings); each modality adds its own learned modality embedding. Both
    go through ONE stack of pre-LN `ModalityEncoderBlock`s (the blocks in
    `moe_layers` with a sparse MoE MLP) and a shared final LayerNorm, in two
    separate calls, so `image_encoder` and `text_encoder` are independent
    sub-models that share weights. Images are pooled by class token
    (`image_pooling="token"`) or mean (`"gap"`), text by its end token
    (`text_pooling="eos"`, the last real token) or masked mean; per-modality
    linear projections map both to `embedding_dim` and the embeddings are
    L2-normalised. Text padding is masked in attention, pooling and the
    entropy losses.

    Routing groups are per modality and per example (MoE `group_size=None`),
    each modality with its own static capacity; unlike the paper, image and
    text tokens never compete for the same expert capacity, which keeps the
    two towers separately exportable.

    Training adds, per modality and per MoE block, the MoE's own auxiliary
    losses and the LIMoE entropy losses: `local_entropy_weight` times the
    mean per-token router entropy, and `global_entropy_weight` times
    `max(0, tau - H(mean router distribution))` with `tau =
    global_entropy_threshold` (or `-H(...)` when it is None). Each of the
    three may be a float or a dict `{"image": x, "text": y}`.

    Args:
        vocabulary_size: int >= 1.
        image_shape: (height, width, channels).
        patch_size: int or (int, int), dividing the image size.
        max_sequence_length: int >= 1, caption tokens (fixed).
        num_layers: int >= 1, shared transformer blocks.
        num_heads: int >= 1, dividing `hidden_dim`.
        hidden_dim: int >= 1, token width.
        mlp_dim: int >= 1, hidden width of dense MLPs and of each expert.
        embedding_dim: None (= `hidden_dim`) or int, shared embedding space.
        num_experts, top_k, moe_layers, router, capacity_factor,
            eval_capacity_factor, moe_kwargs: MoE placement and `SparseMoE`
            arguments, as `MoEViTBackbone` (`moe_layers="every_2"`: blocks
            1, 3, 5, ...).
        image_pooling: `"token"` or `"gap"`.
        text_pooling: `"eos"` or `"mean"`.
        contrastive_loss: `"softmax"` (CLIP InfoNCE) or `"sigmoid"`
            (SigLIP); sets the initial temperature and bias and the task's
            default loss.
        local_entropy_weight, global_entropy_weight: float >= 0 or
            per-modality dict.
        global_entropy_threshold: None, float >= 0 (nats) or per-modality
            dict.
        dropout_rate, attention_dropout, stochastic_depth: floats in [0, 1).
        layer_norm_epsilon: float > 0.
        dtype: None or a dtype policy.

    Example:
    >>> import numpy as np
    >>> backbone = LIMoEBackbone(
    ...     vocabulary_size=50, image_shape=(8, 8, 1), patch_size=2,
    ...     max_sequence_length=6, num_layers=2, num_heads=2, hidden_dim=16,
    ...     mlp_dim=32, num_experts=4)
    >>> out = backbone({"images": np.zeros((3, 8, 8, 1), "float32"),
    ...                 "token_ids": np.ones((3, 6), "int32"),
    ...                 "padding_mask": np.ones((3, 6), "int32")})
    >>> tuple(out["logits"].shape), tuple(out["image_embeddings"].shape)
    ((3, 3), (3, 16))
    """

    def __init__(
        self,
        vocabulary_size,
        image_shape=(224, 224, 3),
        patch_size=16,
        max_sequence_length=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        embedding_dim=None,
        num_experts=8,
        top_k=1,
        moe_layers="every_2",
        router="token_choice",
        capacity_factor=1.25,
        eval_capacity_factor=None,
        moe_kwargs=None,
        image_pooling="gap",
        text_pooling="eos",
        contrastive_loss="softmax",
        local_entropy_weight=0.0,
        global_entropy_weight=0.0,
        global_entropy_threshold=None,
        dropout_rate=0.0,
        attention_dropout=0.0,
        stochastic_depth=0.0,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        # === Validation ===
        vocabulary_size = check_int("vocabulary_size", vocabulary_size, minimum=1)
        image_shape, patch = check_image_shape(image_shape, patch_size)
        max_sequence_length = check_int("max_sequence_length", max_sequence_length, minimum=1)
        args = check_encoder_arguments(
            num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
            mlp_dim=mlp_dim, num_experts=num_experts, top_k=top_k, router=router,
            capacity_factor=capacity_factor, eval_capacity_factor=eval_capacity_factor,
            moe_layers=moe_layers, moe_kwargs=moe_kwargs, dropout_rate=dropout_rate,
            attention_dropout=attention_dropout, stochastic_depth=stochastic_depth,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        num_layers, num_heads, hidden_dim, mlp_dim = (
            args.num_layers, args.num_heads, args.hidden_dim, args.mlp_dim
        )
        dropout_rate, attention_dropout = args.dropout_rate, args.attention_dropout
        stochastic_depth, layer_norm_epsilon = args.stochastic_depth, args.layer_norm_epsilon
        embedding_dim = hidden_dim if embedding_dim is None else check_int(
            "embedding_dim", embedding_dim, minimum=1
        )
        image_pooling = check_choice("image_pooling", image_pooling, tuple(IMAGE_POOLINGS))
        text_pooling = check_choice("text_pooling", text_pooling, tuple(TEXT_POOLINGS))
        entropy_losses = entropy_losses_config(
            local_entropy_weight, global_entropy_weight, global_entropy_threshold
        )

        # === Layers ===
        image_embedding = ViTPatchingAndEmbedding(
            image_size=image_shape[:2],
            patch_size=patch,
            hidden_dim=hidden_dim,
            num_channels=image_shape[2],
            use_class_token=image_pooling == "token",
            dtype=dtype,
            name="image_embedding",
        )
        text_embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=max_sequence_length,
            embedding_dim=hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            name="text_embedding",
        )
        image_modality = ModalityEmbedding(dtype=dtype, name="image_modality_embedding")
        text_modality = ModalityEmbedding(dtype=dtype, name="text_modality_embedding")
        embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="embedding_dropout"
        )
        blocks = []
        for index, moe in enumerate(args.block_moe):
            blocks.append(
                ModalityEncoderBlock(
                    num_heads=num_heads,
                    mlp_dim=mlp_dim,
                    moe=moe,
                    entropy_losses=entropy_losses if moe is not None else None,
                    dropout_rate=dropout_rate,
                    attention_dropout=attention_dropout,
                    stochastic_depth=stochastic_depth * index / max(num_layers - 1, 1),
                    layer_norm_epsilon=layer_norm_epsilon,
                    dtype=dtype,
                    name=f"encoder_block_{index}",
                )
            )
        final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )
        image_pool = TokenPooling(IMAGE_POOLINGS[image_pooling], dtype=dtype, name="image_pooling")
        text_pool = TokenPooling(TEXT_POOLINGS[text_pooling], dtype=dtype, name="text_pooling")
        image_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="image_projection"
        )
        text_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="text_projection"
        )
        normalize = keras.layers.UnitNormalization(axis=-1, dtype=dtype, name="l2_normalize")

        # === Image tower (the shared blocks, image modality) ===
        images = keras.Input(shape=image_shape, name="images")
        x = image_shape_check(image_shape, dtype)(images)
        x = embedding_dropout(image_modality(image_embedding(x)))
        for block in blocks:
            x = block(x, modality="image")
        x = image_projection(image_pool(final_norm(x)))
        image_encoder = tower_model(images, normalize(x), "image_encoder", dtype)

        # === Text tower (the same blocks, text modality) ===
        token_ids = keras.Input(shape=(max_sequence_length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(max_sequence_length,), dtype="int32", name="padding_mask")
        ids_check, mask_check = text_shape_checks(max_sequence_length, dtype)
        ids, mask = ids_check(token_ids), mask_check(padding_mask)
        attention_mask = padding_attention_mask(mask)
        t = embedding_dropout(text_modality(text_embedding(ids)))
        for block in blocks:
            t = block(t, attention_mask=attention_mask, token_mask=mask, modality="text")
        t = text_projection(text_pool(final_norm(t), padding_mask=mask))
        text_encoder = tower_model(
            {"token_ids": token_ids, "padding_mask": padding_mask},
            normalize(t),
            "text_encoder",
            dtype,
        )

        self._build_dual_encoder(image_encoder, text_encoder, contrastive_loss, dtype, **kwargs)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.patch_size = patch_size if isinstance(patch_size, numbers.Integral) else patch
        store_encoder_arguments(self, args, moe_layers, moe_kwargs)
        self.embedding_dim = embedding_dim
        self.image_pooling = image_pooling
        self.text_pooling = text_pooling
        self.local_entropy_weight = local_entropy_weight
        self.global_entropy_weight = global_entropy_weight
        self.global_entropy_threshold = global_entropy_threshold
        self.stochastic_depth = stochastic_depth
        self.entropy_losses = entropy_losses

    @property
    def encoder_blocks(self):
        """The shared `ModalityEncoderBlock`s, in order."""
        return [self.image_encoder.get_layer(f"encoder_block_{i}") for i in range(self.num_layers)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                "max_sequence_length": self.max_sequence_length,
                "embedding_dim": self.embedding_dim,
                **shared_encoder_config(self),
                "image_pooling": self.image_pooling,
                "text_pooling": self.text_pooling,
                "contrastive_loss": self.contrastive_loss,
                "local_entropy_weight": self.local_entropy_weight,
                "global_entropy_weight": self.global_entropy_weight,
                "global_entropy_threshold": self.global_entropy_threshold,
                "stochastic_depth": self.stochastic_depth,
            }
        )
        return config

    @classmethod
    def param_counts_from_config(cls, config):
        """Exact trainable parameter counts (`{"total", "active"}`) of the
        backbone `config` would build, without building it.

        The shared tower counts as a `MoEViTBackbone` of the same shape (patch
        embedding, blocks, final norm; see its `param_counts_from_config` for
        `active`, the parameters applied to one image token), plus the text
        token and position embeddings, the two modality embeddings, the two
        projections and the head's temperature and bias.

        Args:
            config: dict of `LIMoEBackbone` arguments; missing ones take the
                constructor defaults.

        Example:
        >>> counts = LIMoEBackbone.param_counts_from_config({"vocabulary_size": 1000})
        >>> counts["total"] > counts["active"]
        True
        """
        args = {**init_defaults(cls), **config}
        vit_config = {key: args[key] for key in _VIT_KEYS}
        vit_config["pooling"] = args["image_pooling"]
        counts = MoEViTBackbone.param_counts_from_config(vit_config)
        dim = args["hidden_dim"]
        embedding_dim = args["embedding_dim"] or dim
        extra = (
            args["vocabulary_size"] * dim
            + args["max_sequence_length"] * dim
            + 2 * dim
            + 2 * dim * embedding_dim
            + 2
        )
        return {"total": counts["total"] + extra, "active": counts["active"] + extra}
