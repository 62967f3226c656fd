"""Image converter (resize and rescale) of the MoE dual encoders."""

import keras
from keras_hub.layers import ImageConverter

from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.raw_image_input import RawImageInputMixin
from keras_sparse_moe.presets import PreprocessingPresetMixin


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderImageConverter(RawImageInputMixin, PreprocessingPresetMixin, ImageConverter):
    """keras-hub `ImageConverter` of the dual encoders: the same arguments
    and steps as `MoEViTImageConverter` (including the declaration of the
    raw input, `value_range` and `raw_image_shape`; resize to `image_size`, then
    `images * scale + offset`), registered for `MoEDualEncoderBackbone` so
    that keras-hub pairs it with dual-encoder presets (saved as
    `image_converter.json`).

    Example:
    >>> import keras
    >>> import numpy as np
    >>> converter = MoEDualEncoderImageConverter(
    ...     image_size=(4, 4), scale=1 / 127.5, offset=-1.0)
    >>> images = converter(np.full((1, 8, 8, 3), 255.0, "float32"))
    >>> images = keras.ops.convert_to_numpy(images)
    >>> tuple(images.shape), round(float(np.max(images)), 4)
    ((1, 4, 4, 3), 1.0)
    """

    backbone_cls = MoEDualEncoderBackbone
