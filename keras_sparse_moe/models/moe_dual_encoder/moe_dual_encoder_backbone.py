"""Base class of the MoE image-text dual encoders."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import Backbone

from keras_sparse_moe.layers.sparse_moe import SparseMoE
from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import CONTRASTIVE_LOSSES
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ContrastiveHead
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import InputShapeCheck
from keras_sparse_moe.presets import PresetMixin
from keras_sparse_moe.utils.validation import check_choice

# Initial (logit scale, logit bias) per loss: CLIP (Radford et al. 2021) and
# SigLIP (Zhai et al. 2023).
HEAD_INIT = {"softmax": (1.0 / 0.07, 0.0), "sigmoid": (10.0, -10.0)}


IMAGE_HINT = "Resize the images with the preprocessor (MoEDualEncoderPreprocessor) first."
TEXT_HINT = (
    "Pack captions with the preprocessor (MoEDualEncoderPreprocessor), which truncates "
    "longer ones."
)


def image_shape_check(image_shape, dtype=None):
    """`InputShapeCheck` for the `images` input of a tower."""
    return InputShapeCheck(image_shape, "images", IMAGE_HINT, dtype=dtype, name="images_check")


def text_shape_checks(sequence_length, dtype=None):
    """`InputShapeCheck`s for the `token_ids` and `padding_mask` inputs."""
    return tuple(
        InputShapeCheck((sequence_length,), key, TEXT_HINT, dtype=dtype, name=f"{key}_check")
        for key in ("token_ids", "padding_mask")
    )


def tower_model(inputs, outputs, name, dtype=None):
    """A functional sub-model (a tower) computing under the backbone's dtype
    policy: `keras.Model(inputs, outputs)` ignores `dtype`, which would leave
    the tower labelled float32 under a mixed policy. A quantization
    `DTypePolicyMap` gives its default policy (the map stays on the backbone)."""
    model = keras.Model(inputs, outputs, name=name)
    if dtype is not None:
        policy = keras.dtype_policies.get(dtype)
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            policy = policy.default_policy
        model.dtype_policy = policy
    return model


def check_batch_shapes(x, image_shape, sequence_length):
    """Raise a `ValueError` if array inputs (a dict with `images`,
    `token_ids`, `padding_mask`, or an images array) have the wrong shape.
    Datasets and other iterables are left to the model's own checks."""
    expected = {
        "images": tuple(image_shape),
        "token_ids": (sequence_length,),
        "padding_mask": (sequence_length,),
    }
    items = x.items() if isinstance(x, dict) else [("images", x)]
    for key, value in items:
        shape = getattr(value, "shape", None)
        if key not in expected or shape is None:
            continue
        shape = tuple(shape)
        if shape[1:] != expected[key]:
            dims = ", ".join(str(v) for v in expected[key])
            hint = IMAGE_HINT if key == "images" else TEXT_HINT
            raise ValueError(
                f"`{key}` must have shape (batch, {dims}); received shape {shape}. {hint}"
            )


def check_task_inputs(task, x):
    """`check_batch_shapes` for a task's raw `x`, skipping images its
    preprocessor resizes."""
    backbone = task.backbone
    converter = getattr(task.preprocessor, "image_converter", None)
    if converter is not None:
        if not isinstance(x, dict):
            return
        x = {key: value for key, value in x.items() if key != "images"}
    check_batch_shapes(x, backbone.image_shape, backbone.max_sequence_length)


def padding_attention_mask(padding_mask):
    """(batch, tokens) padding mask -> (batch, tokens, tokens) attention mask
    letting every query attend to the real (unpadded) keys."""
    keys = ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)
    queries = ops.expand_dims(ops.ones_like(ops.cast(padding_mask, "bool")), axis=2)
    return ops.logical_and(queries, keys)


class MoEDualEncoderBackbone(PresetMixin, Backbone):
    """Base class of the image-text dual encoders (`LIMoEBackbone`,
    `MoETwoTowerBackbone`); not built directly.

    A dual encoder maps images and texts separately to L2-normalised
    embeddings in one space. Subclasses build two functional sub-models,
    `image_encoder` (`images` -> `(batch, embedding_dim)`) and
    `text_encoder` (`{"token_ids", "padding_mask"}` -> `(batch,
    embedding_dim)`), which can be exported on their own, and call
    `_build_dual_encoder`.

    The backbone itself takes `{"images", "token_ids", "padding_mask"}` (a
    batch of image-caption pairs) and returns a dict with
    `image_embeddings`, `text_embeddings` and `logits` (num_images,
    num_texts) from `contrastive_head` (learnable temperature and bias).
    """

    def _build_dual_encoder(self, image_encoder, text_encoder, contrastive_loss, dtype, **kwargs):
        contrastive_loss = check_choice("contrastive_loss", contrastive_loss, CONTRASTIVE_LOSSES)
        scale, bias = HEAD_INIT[contrastive_loss]
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.contrastive_head = ContrastiveHead(
            logit_scale_init=scale, logit_bias_init=bias, dtype=dtype, name="contrastive_head"
        )
        image_shape = tuple(image_encoder.inputs[0].shape[1:])
        sequence_length = text_encoder.inputs[0].shape[1]
        images = keras.Input(shape=image_shape, name="images")
        token_ids = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(sequence_length,), dtype="int32", name="padding_mask")
        image_embeddings = image_encoder(images)
        text_embeddings = text_encoder({"token_ids": token_ids, "padding_mask": padding_mask})
        logits = self.contrastive_head(image_embeddings, text_embeddings)
        Backbone.__init__(
            self,
            inputs={"images": images, "token_ids": token_ids, "padding_mask": padding_mask},
            outputs={
                "image_embeddings": image_embeddings,
                "text_embeddings": text_embeddings,
                "logits": logits,
            },
            dtype=dtype,
            **kwargs,
        )
        self.contrastive_loss = contrastive_loss

    # ------------------------------------------------------------ properties
    @property
    def image_shape(self):
        """(height, width, channels) of the input images."""
        return tuple(self.image_encoder.inputs[0].shape[1:])

    @property
    def max_sequence_length(self):
        """Number of text tokens per caption (fixed: MoE capacity is static)."""
        return int(self.text_encoder.inputs[0].shape[1])

    @property
    def sparse_moe_layers(self):
        """All `SparseMoE` layers, image and text towers (shared ones once)."""
        return [layer for layer in self._flatten_layers(include_self=False)
                if isinstance(layer, SparseMoE)]

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, first checking the shapes of array inputs."""
        check_batch_shapes(x, self.image_shape, self.max_sequence_length)
        return super().predict(x, *args, **kwargs)

    # -------------------------------------------------------------- encoding
    def encode_image(self, images, training=False):
        """L2-normalised image embeddings `(batch, embedding_dim)`.

        Args:
            images: (batch, height, width, channels) array of
                `image_shape`, already preprocessed (see
                `MoEDualEncoderPreprocessor`, which resizes and rescales).
        """
        shape = tuple(getattr(images, "shape", np.shape(images)))
        if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"`images` must have shape (batch, {', '.join(map(str, self.image_shape))}); "
                f"received shape {shape}. Resize them with the preprocessor "
                "(MoEDualEncoderPreprocessor) first."
            )
        return self.image_encoder(ops.cast(images, self.compute_dtype), training=training)

    def encode_text(self, token_ids, padding_mask=None, training=False):
        """L2-normalised text embeddings `(batch, embedding_dim)`.

        Args:
            token_ids: (batch, max_sequence_length) int array, as packed by
                `MoEDualEncoderPreprocessor` (which truncates long captions).
            padding_mask: (batch, max_sequence_length), 1 for real tokens;
                default `token_ids != 0` (id 0 is `[PAD]`).
        """
        shape = tuple(getattr(token_ids, "shape", np.shape(token_ids)))
        length = self.max_sequence_length
        if len(shape) != 2 or shape[1] != length:
            raise ValueError(
                f"`token_ids` must have shape (batch, {length}); received shape {shape}. "
                f"Pack captions to {length} tokens with the preprocessor "
                "(MoEDualEncoderPreprocessor), which truncates longer ones."
            )
        token_ids = ops.cast(token_ids, "int32")
        if padding_mask is None:
            padding_mask = ops.not_equal(token_ids, 0)
        mask_shape = tuple(getattr(padding_mask, "shape", np.shape(padding_mask)))
        if mask_shape != shape:
            raise ValueError(
                f"`padding_mask` must have the shape of `token_ids` {shape}; received "
                f"{mask_shape}."
            )
        return self.text_encoder(
            {"token_ids": token_ids, "padding_mask": ops.cast(padding_mask, "int32")},
            training=training,
        )
