"""Image converter (resize and rescale) of the MoE dual encoders."""

import keras
from keras_hub.layers import ImageConverter

from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderImageConverter(ImageConverter):
    """keras-hub `ImageConverter` for the dual encoders: resizes images to
    `image_size` and computes `images * scale + offset`.

    Example:
    >>> import numpy as np
    >>> converter = MoEDualEncoderImageConverter(image_size=(8, 8), scale=1 / 16)
    >>> tuple(converter(np.full((2, 16, 16, 1), 16.0, "float32")).shape)
    (2, 8, 8, 1)
    """

    backbone_cls = MoEDualEncoderBackbone
