"""Preprocessor of `MoEViTImageClassifier`."""

import keras
from keras_hub.models import ImageClassifierPreprocessor

from keras_sparse_moe.presets import PreprocessingPresetMixin
from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.models.moe_vit.moe_vit_image_converter import MoEViTImageConverter


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEViTImageClassifierPreprocessor(PreprocessingPresetMixin, ImageClassifierPreprocessor):
    """Applies a `MoEViTImageConverter` to `x` and passes `y` and
    `sample_weight` through (keras-hub `ImageClassifierPreprocessor`). Works
    on batches or single images and inside `tf.data` pipelines.

    Args:
        image_converter: a `MoEViTImageConverter` or None.

    Example:
    >>> import numpy as np
    >>> preprocessor = MoEViTImageClassifierPreprocessor(
    ...     MoEViTImageConverter(image_size=(8, 8), scale=1 / 16))
    >>> x, y = preprocessor(np.full((2, 8, 8, 1), 8.0, "float32"), np.array([1, 2]))
    >>> float(np.asarray(x).max())
    0.5
    """

    backbone_cls = MoEViTBackbone
    image_converter_cls = MoEViTImageConverter

    def __init__(self, image_converter=None, **kwargs):
        super().__init__(image_converter=image_converter, **kwargs)
        # No weights: built from the start. (Keras' JAX `predict_on_batch`
        # otherwise runs the whole task eagerly, op by op, to build it first:
        # half a minute for a tiny model.)
        for layer in self._flatten_layers():
            layer.built = True

    @classmethod
    def for_backbone(cls, backbone, scale=None, offset=None, **converter_kwargs):
        """A preprocessor resizing to `backbone.image_shape[:2]`.

        Example:
        >>> backbone = MoEViTBackbone(image_shape=(8, 8, 1), patch_size=4,
        ...     num_layers=1, num_heads=1, hidden_dim=4, mlp_dim=8, moe_layers="none")
        >>> MoEViTImageClassifierPreprocessor.for_backbone(
        ...     backbone, scale=1 / 16).image_converter.image_size
        (8, 8)
        """
        converter = MoEViTImageConverter(
            image_size=tuple(backbone.image_shape[:2]),
            scale=scale,
            offset=offset,
            **converter_kwargs,
        )
        return cls(image_converter=converter)
