"""Preprocessor of the MoE dual encoders: tokenise + pack captions, resize +
rescale images."""

import keras
from keras_hub.layers import StartEndPacker
from keras_hub.models import Preprocessor
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_sparse_moe.presets import PreprocessingPresetMixin
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_image_converter import (
    MoEDualEncoderImageConverter,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_tokenizer import (
    MoEDualEncoderTokenizer,
)
from keras_sparse_moe.utils.validation import check_int

try:
    import tensorflow as tf
except ImportError:  # pragma: no cover - tensorflow is a dependency
    tf = None

INPUT_KEYS = ("images", "prompts")


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderPreprocessor(PreprocessingPresetMixin, Preprocessor):
    """Turns raw image-caption data into dual-encoder inputs.

    Captions are tokenised (`MoEDualEncoderTokenizer`), wrapped in
    `[START]`/`[END]` and padded with `[PAD]` to `sequence_length`; longer
    captions are truncated, keeping the end token. Images are resized and
    rescaled by the image converter.

    Args:
        tokenizer: a `MoEDualEncoderTokenizer` (default: one with the
            shipped vocabulary).
        image_converter: None or a `MoEDualEncoderImageConverter`.
        sequence_length: int >= 2, packed caption length (must match the
            backbone's `max_sequence_length`).
        add_start_token, add_end_token: bool.

    Call arguments:
        x: a dict with `"images"` and/or `"prompts"` (string or list of
            strings), or a batch of images alone.
        y, sample_weight: passed through.

    Returns:
        For a dict, a dict with `"images"` and/or `"token_ids"` and
        `"padding_mask"` (int32, 1 for real tokens); for images alone, the
        converted images.

    Example:
    >>> import numpy as np
    >>> preprocessor = MoEDualEncoderPreprocessor(
    ...     image_converter=MoEDualEncoderImageConverter(image_size=(8, 8), scale=1 / 16),
    ...     sequence_length=8)
    >>> out = preprocessor({"images": np.zeros((2, 16, 16, 1)),
    ...                     "prompts": ["a photo of the digit one.", "two"]})
    >>> tuple(out["images"].shape), tuple(out["token_ids"].shape)
    ((2, 8, 8, 1), (2, 8))
    >>> np.asarray(out["padding_mask"]).tolist()[1]
    [1, 1, 1, 0, 0, 0, 0, 0]
    """

    backbone_cls = MoEDualEncoderBackbone
    tokenizer_cls = MoEDualEncoderTokenizer
    image_converter_cls = MoEDualEncoderImageConverter

    def __init__(
        self,
        tokenizer=None,
        image_converter=None,
        sequence_length=16,
        add_start_token=True,
        add_end_token=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tokenizer = MoEDualEncoderTokenizer() if tokenizer is None else tokenizer
        self.image_converter = image_converter
        self.add_start_token = bool(add_start_token)
        self.add_end_token = bool(add_end_token)
        self.packer = None
        self.sequence_length = sequence_length

    @property
    def sequence_length(self):
        """Token length the captions are packed to; setting it takes effect
        on the next call (also after the first one)."""
        return self._sequence_length

    @sequence_length.setter
    def sequence_length(self, value):
        self._sequence_length = check_int(
            "sequence_length", value,
            minimum=int(self.add_start_token) + int(self.add_end_token) + 1,
        )
        if self.packer is not None:
            self.packer.sequence_length = self._sequence_length

    @classmethod
    def for_backbone(cls, backbone, scale=None, offset=None, tokenizer=None, **converter_kwargs):
        """A preprocessor matching `backbone`: images resized to its
        `image_shape`, captions packed to its `max_sequence_length`."""
        converter = MoEDualEncoderImageConverter(
            image_size=tuple(backbone.image_shape[:2]), scale=scale, offset=offset,
            **converter_kwargs,
        )
        return cls(
            tokenizer=tokenizer,
            image_converter=converter,
            sequence_length=backbone.max_sequence_length,
        )

    def build(self, input_shape):
        # Deferred so the tokenizer assets are loaded when restoring.
        self.packer = StartEndPacker(
            start_value=self.tokenizer.start_token_id,
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self.built = True

    def _pack(self, prompts):
        token_ids, padding_mask = self.packer(
            self.tokenizer(prompts),
            add_start_value=self.add_start_token,
            add_end_value=self.add_end_token,
        )
        return tf.cast(token_ids, "int32"), tf.cast(padding_mask, "int32")

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict):
            images = self.image_converter(x) if self.image_converter else x
            return keras.utils.pack_x_y_sample_weight(images, y, sample_weight)
        unknown = set(x) - set(INPUT_KEYS)
        if unknown or not set(x) & set(INPUT_KEYS):
            raise ValueError(
                f"MoEDualEncoderPreprocessor expects a dict with keys among {list(INPUT_KEYS)} "
                f"(or a batch of images); received keys {sorted(x)}."
            )
        outputs = {}
        if x.get("images") is not None:
            images = x["images"]
            outputs["images"] = self.image_converter(images) if self.image_converter else images
        if x.get("prompts") is not None:
            outputs["token_ids"], outputs["padding_mask"] = self._pack(x["prompts"])
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "add_start_token": self.add_start_token,
                "add_end_token": self.add_end_token,
            }
        )
        return config
