"""Image classifier on a `MoEViTBackbone`."""

import keras
from keras import ops
from keras_hub.models import ImageClassifier
from keras_hub.models import Task

from keras_sparse_moe.models.moe_vit.moe_vit_backbone import POOLINGS
from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
from keras_sparse_moe.models.encoder_arguments import check_rate
from keras_sparse_moe.models.moe_vit.moe_vit_map_head import MoEViTMAPHead
from keras_sparse_moe.models.moe_vit.moe_vit_image_classifier_preprocessor import (
    MoEViTImageClassifierPreprocessor,
)
from keras_sparse_moe.models.raw_image_input import InputRangeCheckMixin
from keras_sparse_moe.models.shuffled_fit import ShuffledFitMixin
from keras_sparse_moe.models.task_compile import CompileConfigMixin
from keras_sparse_moe.presets import PresetMixin
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_int


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEViTImageClassifier(InputRangeCheckMixin, ShuffledFitMixin, CompileConfigMixin, PresetMixin,
                            ImageClassifier):
    """Classifies images with a `MoEViTBackbone`: pool the tokens (class
    token, or mean of the patch tokens), dropout, then a `Dense` head.

    `fit()` trains on the classification loss plus the auxiliary
    load-balancing losses of the MoE layers (Keras adds layer losses to the
    compiled loss in training). `compile()` defaults: AdamW (learning rate
    1e-3, weight decay 0.05), `SparseCategoricalCrossentropy` (from logits
    unless `activation="softmax"`) and an `"accuracy"` metric; any of them
    can be overridden. With a `preprocessor`, `fit`/`predict` take raw
    images (resized and rescaled by the preprocessor's image converter);
    they warn once per model when their images (arrays or tensors) are
    clearly outside the converter's `value_range`, e.g. 0..255 pixels given
    to a model for the 0..16 digits.

    Args:
        backbone: a `MoEViTBackbone`.
        num_classes: int >= 1.
        preprocessor: None or a `MoEViTImageClassifierPreprocessor`.
        pooling: None (follow `backbone.pooling`), `"token"` (the class
            token; needs a backbone with `pooling="token"`), `"gap"` (mean
            of the patch tokens) or `"map"` (multi-head attention pooling of
            the patch tokens with a learned query, `MoEViTMAPHead`, as ViT's
            and vmoe's `classifier="map"`; its heads, MLP width, activation,
            LayerNorm epsilon and `attention_qk_norm` are the backbone's).
        representation_size: None or int >= 1. A pre-logits layer
            `Dense(representation_size)` + tanh between the pooling and the
            head (ViT / vmoe `representation_size`).
        activation: None (logits) or an activation for the head, e.g.
            `"softmax"`.
        dropout: float in [0, 1), dropout before the head.
        head_dtype: None (the backbone's) or a dtype policy for the head.

    Example:
    >>> import numpy as np
    >>> backbone = MoEViTBackbone(image_shape=(8, 8, 1), patch_size=2, num_layers=2,
    ...     num_heads=2, hidden_dim=16, mlp_dim=32, num_experts=4)
    >>> classifier = MoEViTImageClassifier(backbone, num_classes=3)
    >>> classifier.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0).shape
    (2, 3)
    """

    backbone_cls = MoEViTBackbone
    preprocessor_cls = MoEViTImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        pooling=None,
        activation=None,
        dropout=0.0,
        head_dtype=None,
        representation_size=None,
        **kwargs,
    ):
        if not isinstance(backbone, MoEViTBackbone):
            raise ValueError(
                "Argument `backbone` must be a MoEViTBackbone; received "
                f"{type(backbone).__name__}."
            )
        num_classes = check_int("num_classes", num_classes, minimum=1)
        if pooling is None:
            pooling = backbone.pooling
        pooling = check_choice("pooling", pooling, POOLINGS)
        if pooling == "token" and backbone.pooling != "token":
            raise ValueError(
                "Argument `pooling`='token' needs a backbone with a class token "
                f"(pooling='token'); this backbone has pooling={backbone.pooling!r}. "
                "Use pooling='gap' or None."
            )
        dropout = check_rate("dropout", dropout)
        if representation_size is not None:
            representation_size = check_int(
                "representation_size", representation_size, minimum=1
            )
        head_dtype = head_dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=head_dtype, name="output_dropout"
        )
        self.map_head = None
        if pooling == "map":
            self.map_head = MoEViTMAPHead(
                num_heads=backbone.num_heads, mlp_dim=backbone.mlp_dim,
                activation=backbone.mlp_activation,
                layer_norm_epsilon=backbone.layer_norm_epsilon,
                qk_norm=backbone.attention_qk_norm, dtype=head_dtype, name="map_head",
            )
        self.pre_logits = None
        if representation_size is not None:
            self.pre_logits = keras.layers.Dense(
                representation_size, activation="tanh", dtype=head_dtype, name="pre_logits"
            )
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype=head_dtype, name="predictions"
        )

        # === Functional model ===
        inputs = backbone.input
        tokens = backbone(inputs)
        first = 1 if backbone.pooling == "token" else 0
        if pooling == "token":
            pooled = tokens[:, 0, :]
        elif pooling == "map":
            pooled = self.map_head(tokens[:, first:, :])
        else:
            pooled = ops.mean(tokens[:, first:, :], axis=1)
        if self.pre_logits is not None:
            pooled = self.pre_logits(pooled)
        outputs = self.output_dense(self.output_dropout(pooled))
        # Skip ImageClassifier.__init__, which builds a 2D pooling head.
        Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.activation = activation
        self.dropout = dropout
        self.representation_size = representation_size

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "pooling": self.pooling,
                "activation": self.activation,
                "dropout": self.dropout,
                "representation_size": self.representation_size,
            }
        )
        return config

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configure training; `"auto"` picks the defaults described in the
        class docstring. Other arguments as `keras.Model.compile`."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
