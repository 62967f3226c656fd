"""Two-tower MoE dual encoder: an MoE-ViT image tower and a text tower."""

import keras
from keras import layers

from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import TokenPooling
from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import IMAGE_POOLINGS
from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import TEXT_POOLINGS
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    image_shape_check,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    text_shape_checks,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import tower_model
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_int


def _check_tower(name, tower, input_names):
    if not isinstance(tower, keras.Model) or sorted(
        getattr(t, "name", "").split(":")[0] for t in tower.inputs
    ) != sorted(input_names):
        received = type(tower).__name__ if not isinstance(tower, keras.Model) else (
            f"a model with inputs {[t.name for t in tower.inputs]}")
        raise ValueError(
            f"Argument `{name}` must be a Keras functional model (e.g. a keras-hub "
            f"Backbone) with inputs named {list(input_names)}; received {received}."
        )
    if len(tower.outputs) != 1 or len(tower.outputs[0].shape) != 3:
        raise ValueError(
            f"Argument `{name}` must return one token sequence (batch, tokens, dim); "
            f"received outputs {[tuple(o.shape) for o in tower.outputs]}."
        )


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoETwoTowerBackbone(MoEDualEncoderBackbone):
    """Two-tower image-text dual encoder (CLIP/SigLIP layout) with sparse MoE
    towers: an image tower such as `MoEViTBackbone` and a text tower such as
    `MoETextEncoder` (dense or MoE), each pooled, linearly projected to
    `embedding_dim` and L2-normalised.

    Args:
        vision_encoder: a functional model (e.g. `MoEViTBackbone`) with one
            input named `images` returning `(batch, tokens, dim)`.
        text_encoder: a functional model (e.g. `MoETextEncoder`) with inputs
            `token_ids` and `padding_mask` returning `(batch, tokens, dim)`.
        embedding_dim: int >= 1, shared embedding width.
        image_pooling: None (from `vision_encoder.pooling`: class token for
            `"token"`, mean for `"gap"`), `"token"` or `"gap"`.
        text_pooling: `"eos"` (last real token) or `"mean"`.
        contrastive_loss: `"softmax"` or `"sigmoid"`.
        dtype: None or a dtype policy.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.models.moe_vit import MoEViTBackbone
    >>> from keras_sparse_moe.models.moe_dual_encoder import MoETextEncoder
    >>> vision = MoEViTBackbone(image_shape=(8, 8, 1), patch_size=4,
    ...     num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16, num_experts=4)
    >>> text = MoETextEncoder(vocabulary_size=30, max_sequence_length=5,
    ...     num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16)
    >>> backbone = MoETwoTowerBackbone(vision, text, embedding_dim=6)
    >>> out = backbone({"images": np.zeros((2, 8, 8, 1), "float32"),
    ...                 "token_ids": np.ones((2, 5), "int32"),
    ...                 "padding_mask": np.ones((2, 5), "int32")})
    >>> tuple(out["logits"].shape), tuple(out["text_embeddings"].shape)
    ((2, 2), (2, 6))
    """

    def __init__(
        self,
        vision_encoder,
        text_encoder,
        embedding_dim=512,
        image_pooling=None,
        text_pooling="eos",
        contrastive_loss="softmax",
        dtype=None,
        **kwargs,
    ):
        _check_tower("vision_encoder", vision_encoder, ("images",))
        _check_tower("text_encoder", text_encoder, ("token_ids", "padding_mask"))
        embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        if image_pooling is None:
            image_pooling = getattr(vision_encoder, "pooling", "gap")
        image_pooling = check_choice("image_pooling", image_pooling, tuple(IMAGE_POOLINGS))
        if image_pooling == "token" and getattr(vision_encoder, "pooling", "token") != "token":
            raise ValueError(
                "Argument `image_pooling`='token' needs a vision encoder with a class token "
                f"(MoEViTBackbone pooling='token'); received one with "
                f"pooling={vision_encoder.pooling!r}."
            )
        text_pooling = check_choice("text_pooling", text_pooling, tuple(TEXT_POOLINGS))

        normalize = layers.UnitNormalization(axis=-1, dtype=dtype, name="l2_normalize")
        image_pool = TokenPooling(IMAGE_POOLINGS[image_pooling], dtype=dtype, name="image_pooling")
        text_pool = TokenPooling(TEXT_POOLINGS[text_pooling], dtype=dtype, name="text_pooling")
        image_projection = layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="image_projection"
        )
        text_projection = layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="text_projection"
        )

        image_shape = tuple(vision_encoder.inputs[0].shape[1:])
        images = keras.Input(shape=image_shape, name="images")
        x = vision_encoder(image_shape_check(image_shape, dtype)(images))
        x = image_projection(image_pool(x))
        image_encoder = tower_model(images, normalize(x), "image_encoder", dtype)

        length = text_encoder.inputs[0].shape[1]
        token_ids = keras.Input(shape=(length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(length,), dtype="int32", name="padding_mask")
        ids_check, mask_check = text_shape_checks(length, dtype)
        ids, mask = ids_check(token_ids), mask_check(padding_mask)
        t = text_encoder({"token_ids": ids, "padding_mask": mask})
        t = text_projection(text_pool(t, padding_mask=mask))
        text_encoder_model = tower_model(
            {"token_ids": token_ids, "padding_mask": padding_mask},
            normalize(t),
            "text_encoder",
            dtype,
        )
        self.vision_tower = vision_encoder
        self.text_tower = text_encoder
        self._build_dual_encoder(image_encoder, text_encoder_model, contrastive_loss, dtype,
                                 **kwargs)

        self.embedding_dim = embedding_dim
        self.image_pooling = image_pooling
        self.text_pooling = text_pooling

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vision_encoder": layers.serialize(self.vision_tower),
                "text_encoder": layers.serialize(self.text_tower),
                "embedding_dim": self.embedding_dim,
                "image_pooling": self.image_pooling,
                "text_pooling": self.text_pooling,
                "contrastive_loss": self.contrastive_loss,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.get(config["dtype"])
        for key in ("vision_encoder", "text_encoder"):
            if isinstance(config[key], dict):
                config[key] = layers.deserialize(config[key], custom_objects=custom_objects)
        return cls(**config)
