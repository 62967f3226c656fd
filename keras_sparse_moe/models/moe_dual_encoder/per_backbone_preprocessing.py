"""The dual encoders' tokenizer and image converter declared per backbone
class, for keras-hub's generic loaders.

`keras_hub.tokenizers.Tokenizer.from_preset(dir)` and
`keras_hub.layers.ImageConverter.from_preset(dir)` read the backbone class
of a preset (`LIMoEBackbone` or `MoETwoTowerBackbone`) and look for a
registered subclass whose `backbone_cls` is exactly that class. The shared
`MoEDualEncoderTokenizer` and `MoEDualEncoderImageConverter` declare the
common base `MoEDualEncoderBackbone`, so these subclasses (the same layers)
declare the concrete ones. The loaders (keras-hub's, and these classes' own
`from_preset`) then return the tokenizer and image converter saved in the
preset, which for presets saved through `MoEDualEncoderPreprocessor` are the
shared classes.
"""

import keras

from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_image_converter import (
    MoEDualEncoderImageConverter,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_tokenizer import (
    MoEDualEncoderTokenizer,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_two_tower_backbone import (
    MoETwoTowerBackbone,
)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class LIMoETokenizer(MoEDualEncoderTokenizer):
    """`MoEDualEncoderTokenizer` declared for `LIMoEBackbone` presets (what
    `keras_hub.tokenizers.Tokenizer.from_preset` looks up).

    Example:
    >>> tokenizer = LIMoETokenizer()
    >>> tokenizer.detokenize(tokenizer("The digit two."))
    'the digit two .'
    """

    backbone_cls = LIMoEBackbone


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class LIMoEImageConverter(MoEDualEncoderImageConverter):
    """`MoEDualEncoderImageConverter` declared for `LIMoEBackbone` presets
    (what `keras_hub.layers.ImageConverter.from_preset` looks up).

    Example:
    >>> import numpy as np
    >>> converter = LIMoEImageConverter(image_size=(4, 4), scale=1 / 16)
    >>> tuple(converter(np.zeros((1, 8, 8, 1), "float32")).shape)
    (1, 4, 4, 1)
    """

    backbone_cls = LIMoEBackbone


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoETwoTowerTokenizer(MoEDualEncoderTokenizer):
    """`MoEDualEncoderTokenizer` declared for `MoETwoTowerBackbone` presets
    (what `keras_hub.tokenizers.Tokenizer.from_preset` looks up).

    Example:
    >>> tokenizer = MoETwoTowerTokenizer()
    >>> tokenizer.detokenize(tokenizer("The digit two."))
    'the digit two .'
    """

    backbone_cls = MoETwoTowerBackbone


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoETwoTowerImageConverter(MoEDualEncoderImageConverter):
    """`MoEDualEncoderImageConverter` declared for `MoETwoTowerBackbone`
    presets (what `keras_hub.layers.ImageConverter.from_preset` looks up).

    Example:
    >>> import numpy as np
    >>> converter = MoETwoTowerImageConverter(image_size=(4, 4), scale=1 / 16)
    >>> tuple(converter(np.zeros((1, 8, 8, 1), "float32")).shape)
    (1, 4, 4, 1)
    """

    backbone_cls = MoETwoTowerBackbone
