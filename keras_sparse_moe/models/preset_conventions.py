"""What the architecture presets of every model family share: the input
scalings of their preprocessors and the wording of their descriptions."""

import functools

from keras_sparse_moe.data.digits import DIGITS_MAX_VALUE

RGB_SCALING = {"scale": 1 / 127.5, "offset": -1.0, "value_range": (0, 255)}
"""RGB values in [0, 255] -> [-1, 1], as in the V-MoE / big_vision input
pipelines."""

DIGITS_SCALING = {
    "scale": 1 / DIGITS_MAX_VALUE,
    "value_range": (0, DIGITS_MAX_VALUE),
    "raw_image_shape": (8, 8, 1),
}
"""The embedded 8x8 grayscale digits (values 0..16) -> [0, 1]."""

NO_WEIGHTS = "No pretrained weights ship: the model starts from random initialisation."
"""Last sentence of the description of a preset without weights."""


def scaled_preprocessor(preprocessor_cls, scaling):
    """The `preprocessor(backbone)` factory of a preset (see
    `register_preset`): `preprocessor_cls.for_backbone(backbone, **scaling)`.

    Example:
    >>> from keras_sparse_moe.models.moe_vit import MoEViTBackbone
    >>> from keras_sparse_moe.models.moe_vit import MoEViTImageClassifierPreprocessor
    >>> make = scaled_preprocessor(MoEViTImageClassifierPreprocessor, {"scale": 1 / 16})
    >>> backbone = MoEViTBackbone(image_shape=(8, 8, 1), patch_size=4, num_layers=1,
    ...     num_heads=1, hidden_dim=4, mlp_dim=8, moe_layers="none")
    >>> make(backbone).image_converter.scale
    0.0625
    """
    return functools.partial(preprocessor_cls.for_backbone, **scaling)
