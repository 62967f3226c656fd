"""V-MoE style vision transformer backbone."""

import numbers

import keras
from keras_hub.models import Backbone
from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

from keras_sparse_moe.layers.activations import get_activation
from keras_sparse_moe.layers.encoder_block import MoETransformerEncoderBlock
from keras_sparse_moe.models.encoder_arguments import check_encoder_arguments
from keras_sparse_moe.models.encoder_arguments import check_image_shape
from keras_sparse_moe.models.encoder_arguments import shared_encoder_config
from keras_sparse_moe.models.encoder_arguments import store_encoder_arguments
from keras_sparse_moe.models.moe_vit.moe_vit_geometry import check_stem_channels
from keras_sparse_moe.models.moe_vit.moe_vit_geometry import stem_geometry
from keras_sparse_moe.models.moe_vit.moe_vit_profile import profile_moe_vit_config
from keras_sparse_moe.models.moe_vit.moe_vit_sincos_embedding import (
    SinCos2DPatchingAndEmbedding,
)
from keras_sparse_moe.presets import PresetMixin
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float

POOLINGS = ("token", "gap", "map")
POSITION_EMBEDDINGS = ("learned", "sincos2d")


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEViTBackbone(PresetMixin, Backbone):
    """Vision transformer whose MLP blocks are partly sparse MoE (V-MoE).

    Images are cut into patches (a strided `Conv2D`, optionally after a
    convolutional stem, `stem_channels`), a class token is
    prepended when `pooling="token"`, position embeddings are added (learned,
    or fixed 2-D sine-cosine ones, `position_embedding`),
    then `num_layers` pre-LN `MoETransformerEncoderBlock`s run, the blocks in
    `moe_layers` with a `SparseMoE` MLP of `num_experts` experts of width
    `mlp_dim` (Riquelme et al. 2021, https://arxiv.org/abs/2106.05974; Soft
    MoE with `router="soft"`, Puigcerver et al. 2023,
    https://arxiv.org/abs/2308.00951). A final LayerNorm follows. Output: the
    token sequence `(batch, tokens, hidden_dim)`, class token first when
    there is one, like keras-hub's `ViTBackbone`.

    With `stem_channels=[c_1, ..., c_n]` the image first goes through n
    3x3 convolutions with stride 2 and GELU (`stem_conv_{i}`), and the patch
    embedding then cuts patches of `patch_size / 2**n` from the stem's output:
    the token grid is the same, but each token sees overlapping pixels through
    learned local filters (the convolutional stem of Xiao et al. 2021, Early
    Convolutions Help Transformers See Better, https://arxiv.org/abs/2106.14881;
    with n = log2(patch_size) the patch embedding becomes their final 1x1
    convolution).

    Layer names (stable weight paths): `stem_conv_{i}` (with a stem),
    `patching_and_embedding`
    (`class_token`, `patch_embedding/kernel`, `position_embedding/embeddings`
    when learned), `encoder_block_{i}` (`norm1`, `attention` (with
    `query_norm`/`key_norm` when `attention_qk_norm`), `norm2`, and `mlp_in`/`mlp_out`
    or `moe/router/kernel`, `moe/experts/kernel_in` ...), `final_norm`.

    Args:
        image_shape: (height, width, channels), both sides divisible by the
            patch size.
        patch_size: int or (int, int).
        num_layers: int >= 1, transformer blocks.
        num_heads: int >= 1, dividing `hidden_dim`.
        hidden_dim: int >= 1, token width.
        mlp_dim: int >= 1, hidden width of the dense MLPs and of each expert.
        num_experts: int >= 1, experts per MoE block.
        top_k: int in [1, num_experts], experts per token (token choice) or
            the expert-choice `top_k`; unused by the soft router.
        moe_layers: which blocks are MoE: `"every_N"`, `"last_N"` (the last
            N odd blocks), `"all"`, `"none"` or a list of block indices (see
            `resolve_moe_layers`).
        router: `"token_choice"`, `"expert_choice"` or `"soft"`.
        capacity_factor: float > 0 or None (dropless), training capacity.
        eval_capacity_factor: float > 0 or None (same as training).
        moe_kwargs: None or a dict of extra `SparseMoE` arguments for every
            MoE block; integer keys map a block index to arguments for that
            block only, e.g. `{"group_size": 17, 11: {"num_experts": 16}}`.
        pooling: `"token"` (prepend a class token; classifiers read it),
            `"gap"` (no class token; classifiers average the tokens) or
            `"map"` (no class token; classifiers pool the tokens with
            multi-head attention, `MoEViTMAPHead`).
        stem_channels: None (patchify the image directly) or a list of
            positive ints, the output channels of stride-2 3x3 stem
            convolutions; the patch size must be divisible by
            `2**len(stem_channels)`.
        dropout_rate: float in [0, 1), dropout after the embeddings, the
            attention and the MLPs.
        attention_dropout: float in [0, 1).
        stochastic_depth: float in [0, 1), drop-path rate of the last block,
            increasing linearly from 0 at the first block.
        layer_norm_epsilon: float > 0.
        mlp_activation: activation of the dense MLPs and of the experts:
            `"gelu"` (exact, default), `"gelu_approximate"` (the tanh form
            that ViT and V-MoE use), or any Keras activation name.
        position_embedding: `"learned"` (default; a trained table, one row
            per token) or `"sincos2d"` (fixed 2-D sine-cosine embeddings of
            the patch grid, no weights, none for the class token;
            `sincos2d_position_table`, as vmoe's and big_vision's
            `sincos2d`; needs `hidden_dim` a multiple of 4 and >= 8).
        position_embedding_temperature: float > 0, the frequency base of
            the `"sincos2d"` table (vmoe's `position_emb.temperature`;
            default 10000, the only value allowed with `"learned"`).
        attention_qk_norm: bool, LayerNorm on each head's projected queries
            and keys in every block (`QKNormMultiHeadAttention`; vmoe's
            `attention_qk_norm`, used by its Soft MoE models). Default False.
        dtype: None or a dtype policy.

    Example:
    >>> import numpy as np
    >>> backbone = MoEViTBackbone(
    ...     image_shape=(8, 8, 1), patch_size=2, num_layers=2, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32, num_experts=4, top_k=2)
    >>> backbone.moe_layer_indices
    (1,)
    >>> tuple(backbone(np.zeros((3, 8, 8, 1), "float32")).shape)
    (3, 17, 16)
    """

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        num_experts=8,
        top_k=2,
        moe_layers="every_2",
        router="token_choice",
        capacity_factor=1.25,
        eval_capacity_factor=None,
        moe_kwargs=None,
        pooling="token",
        stem_channels=None,
        dropout_rate=0.0,
        attention_dropout=0.0,
        stochastic_depth=0.0,
        layer_norm_epsilon=1e-6,
        mlp_activation="gelu",
        position_embedding="learned",
        attention_qk_norm=False,
        dtype=None,
        position_embedding_temperature=10_000.0,
        **kwargs,
    ):
        # === Validation ===
        image_shape, patch = check_image_shape(image_shape, patch_size)
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
        pooling = check_choice("pooling", pooling, POOLINGS)
        position_embedding = check_choice(
            "position_embedding", position_embedding, POSITION_EMBEDDINGS
        )
        if position_embedding == "sincos2d" and (hidden_dim % 4 or hidden_dim < 8):
            raise ValueError(
                "Argument `position_embedding`='sincos2d' needs `hidden_dim` to be a multiple "
                f"of 4 and at least 8; received hidden_dim={hidden_dim}."
            )
        position_embedding_temperature = check_float(
            "position_embedding_temperature", position_embedding_temperature,
            minimum=0.0, strict=True,
        )
        if position_embedding == "learned" and position_embedding_temperature != 10_000.0:
            raise ValueError(
                "Argument `position_embedding_temperature` applies to "
                "position_embedding='sincos2d' only; received "
                f"position_embedding_temperature={position_embedding_temperature} with "
                "position_embedding='learned'."
            )
        if not isinstance(attention_qk_norm, bool):
            raise ValueError(
                "Argument `attention_qk_norm` must be True or False; received "
                f"attention_qk_norm={attention_qk_norm!r}."
            )
        get_activation(mlp_activation, name="mlp_activation")
        stem_channels = check_stem_channels(stem_channels, patch)
        embedded_shape, embedded_patch = stem_geometry(image_shape, patch, stem_channels)

        # === Layers ===
        stem = [
            keras.layers.Conv2D(
                channels, 3, strides=2, padding="same", activation="gelu",
                dtype=dtype, name=f"stem_conv_{index}",
            )
            for index, channels in enumerate(stem_channels)
        ]
        embedding_cls = ViTPatchingAndEmbedding
        embedding_kwargs = {}
        if position_embedding == "sincos2d":
            embedding_cls = SinCos2DPatchingAndEmbedding
            embedding_kwargs["temperature"] = position_embedding_temperature
        embedding = embedding_cls(
            image_size=embedded_shape[:2],
            patch_size=embedded_patch,
            hidden_dim=hidden_dim,
            num_channels=embedded_shape[2],
            use_class_token=pooling == "token",
            dtype=dtype,
            name="patching_and_embedding",
            **embedding_kwargs,
        )
        embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="embedding_dropout"
        )
        blocks = []
        for index in range(num_layers):
            blocks.append(
                MoETransformerEncoderBlock(
                    num_heads=num_heads,
                    mlp_dim=mlp_dim,
                    moe=args.block_moe[index],
                    dropout_rate=dropout_rate,
                    attention_dropout=attention_dropout,
                    stochastic_depth=stochastic_depth * index / max(num_layers - 1, 1),
                    layer_norm_epsilon=layer_norm_epsilon,
                    activation=mlp_activation,
                    qk_norm=attention_qk_norm,
                    dtype=dtype,
                    name=f"encoder_block_{index}",
                )
            )
        final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )

        # === Functional model ===
        inputs = keras.Input(shape=image_shape, name="images")
        x = inputs
        for conv in stem:
            x = conv(x)
        x = embedding_dropout(embedding(x))
        for block in blocks:
            x = block(x)
        outputs = final_norm(x)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size if isinstance(patch_size, numbers.Integral) else patch
        store_encoder_arguments(self, args, moe_layers, moe_kwargs)
        self.pooling = pooling
        self.mlp_activation = mlp_activation
        self.position_embedding = position_embedding
        self.position_embedding_temperature = position_embedding_temperature
        self.attention_qk_norm = attention_qk_norm
        self.stem_channels = list(stem_channels) or None
        self.stochastic_depth = stochastic_depth
        self.grid_size = (image_shape[0] // patch[0], image_shape[1] // patch[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_tokens = self.num_patches + (1 if pooling == "token" else 0)

    @property
    def encoder_blocks(self):
        """The `MoETransformerEncoderBlock`s, in order."""
        return [self.get_layer(f"encoder_block_{i}") for i in range(self.num_layers)]

    @property
    def sparse_moe_layers(self):
        """The `SparseMoE` layers of the MoE blocks, in block order."""
        return [self.get_layer(f"encoder_block_{i}").mlp for i in self.moe_layer_indices]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                **shared_encoder_config(self),
                "pooling": self.pooling,
                "stem_channels": self.stem_channels,
                "stochastic_depth": self.stochastic_depth,
                "mlp_activation": self.mlp_activation,
                "position_embedding": self.position_embedding,
                "position_embedding_temperature": self.position_embedding_temperature,
                "attention_qk_norm": self.attention_qk_norm,
            }
        )
        return config

    @classmethod
    def profile_config(cls, config):
        """The `keras_sparse_moe.profile.ModelProfile` of the backbone `config`
        would build, computed analytically without building it (equal to
        profiling the built model; cheap for paper-sized configs).

        Args:
            config: dict of constructor arguments (as from `get_config()`);
                missing ones take the constructor defaults.

        Example:
        >>> result = MoEViTBackbone.profile_config(
        ...     {"image_shape": (8, 8, 1), "patch_size": 4, "num_layers": 2,
        ...      "num_heads": 1, "hidden_dim": 4, "mlp_dim": 8, "num_experts": 4})
        >>> len(result.moe_layers), result.params_total > result.params_active
        (1, True)
        """
        return profile_moe_vit_config(cls, dict(config))

    @classmethod
    def param_counts_from_config(cls, config):
        """Trainable and active-per-token parameter counts of the backbone
        `config` would build, without building it (from `profile_config`).

        Example:
        >>> MoEViTBackbone.param_counts_from_config(
        ...     {"image_shape": (8, 8, 1), "patch_size": 4, "num_layers": 1,
        ...      "num_heads": 1, "hidden_dim": 4, "mlp_dim": 8, "moe_layers": "none"})
        {'total': 272, 'active': 272}
        """
        report = cls.profile_config(config)
        return {"total": int(report.params_total), "active": int(report.params_active)}
