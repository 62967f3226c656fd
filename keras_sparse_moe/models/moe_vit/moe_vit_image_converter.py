"""Image converter (resize, rescale, normalise) for MoE-ViT models."""

import keras
from keras_hub.layers import ImageConverter

from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.models.raw_image_input import RawImageInputMixin
from keras_sparse_moe.presets import PreprocessingPresetMixin


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEViTImageConverter(RawImageInputMixin, PreprocessingPresetMixin, ImageConverter):
    """Resizes images to the backbone's `image_shape[:2]`, then computes
    `image * scale + offset` (per channel when given as tuples).

    keras-hub's `ImageConverter` for `MoEViTBackbone`; it is saved with a
    preset as `image_converter.json`. Typical settings: `scale=1/16` for the
    0..16 valued 8x8 digits, `scale=1/127.5, offset=-1` for RGB images in
    [0, 255] mapped to [-1, 1] (V-MoE), or ImageNet mean/std via per-channel
    `scale=[1/(255*s) for s in std]`, `offset=[-m/s for m, s in zip(mean, std)]`.

    Args:
        image_size: (height, width) or None (no resizing).
        scale: float, per-channel tuple, or None.
        offset: float, per-channel tuple, or None.
        value_range: None or `(low, high)`, the raw pixel values the
            converter is made for (`(0, 16)` for the digits, `(0, 255)` for
            8-bit images). `fit` / `evaluate` / `predict` of a classifier
            warn once when their images are clearly outside it.
        raw_image_shape: None or `(height, width, channels)` of the raw
            images (e.g. `(8, 8, 1)` for the digits, upsampled to the
            backbone's 16x16); the default input of a LiteRT export with
            preprocessing.
        **kwargs: other `keras_hub.layers.ImageConverter` arguments
            (`interpolation`, `crop_to_aspect_ratio`, `antialias`, ...).

    Example:
    >>> import numpy as np
    >>> converter = MoEViTImageConverter(image_size=(8, 8), scale=1 / 16, value_range=(0, 16))
    >>> tuple(converter(np.full((2, 16, 16, 1), 16.0, "float32")).shape)
    (2, 8, 8, 1)
    >>> converter.rescaled_to((0, 255))["scale"] == 1 / 255
    True
    """

    backbone_cls = MoEViTBackbone
