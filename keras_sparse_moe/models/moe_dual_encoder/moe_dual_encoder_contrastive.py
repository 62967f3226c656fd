"""Contrastive image-text training task for the MoE dual encoders."""

import keras
from keras import ops
from keras_hub.models import Task

from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import get_contrastive_loss
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_task_checks import (
    DualEncoderInputChecks,
)
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_task_checks import (
    check_dual_encoder_backbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
    MoEDualEncoderPreprocessor,
)
from keras_sparse_moe.models.shuffled_fit import ShuffledFitMixin
from keras_sparse_moe.models.task_compile import CompileConfigMixin
from keras_sparse_moe.presets import PresetMixin


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderContrastive(
    CompileConfigMixin, DualEncoderInputChecks, ShuffledFitMixin, PresetMixin, Task
):
    """Trains a dual encoder on batches of matching image-caption pairs.

    The model maps `{"images", "token_ids", "padding_mask"}` (or, with a
    preprocessor, `{"images", "prompts"}`) to the `(batch, batch)`
    image-text logits; example `i`'s image and caption are the positive
    pair, every other pairing in the batch a negative. No labels are needed
    (`y=None` means `eye(batch)`); a `(batch, batch)` `y` of matching pairs
    may be given instead (e.g. when a batch holds several captions of a
    class).

    `compile()` defaults: AdamW (learning rate 1e-3, weight decay 1e-4), the
    backbone's `contrastive_loss` (`SoftmaxContrastiveLoss` or
    `SigmoidContrastiveLoss`) and an image->text in-batch retrieval accuracy
    (`image_to_text_accuracy`). In training Keras adds the MoE auxiliary and
    LIMoE entropy losses of the backbone's layers to the contrastive loss.

    Args:
        backbone: a `MoEDualEncoderBackbone` (`LIMoEBackbone` or
            `MoETwoTowerBackbone`).
        preprocessor: None or a `MoEDualEncoderPreprocessor`.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
    >>> backbone = LIMoEBackbone(vocabulary_size=40, image_shape=(8, 8, 1),
    ...     patch_size=4, max_sequence_length=5, num_layers=2, num_heads=2,
    ...     hidden_dim=8, mlp_dim=16, num_experts=4)
    >>> task = MoEDualEncoderContrastive(backbone)
    >>> x = {"images": np.zeros((3, 8, 8, 1), "float32"),
    ...      "token_ids": np.ones((3, 5), "int32"),
    ...      "padding_mask": np.ones((3, 5), "int32")}
    >>> task.predict(x, verbose=0).shape
    (3, 3)
    """

    backbone_cls = MoEDualEncoderBackbone
    preprocessor_cls = MoEDualEncoderPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        check_dual_encoder_backbone(backbone)
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = backbone.input
        outputs = backbone(inputs)["logits"]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configure training; `"auto"` picks the defaults described in the
        class docstring. Other arguments as `keras.Model.compile`."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4)
        if loss == "auto":
            loss = get_contrastive_loss(self.backbone.contrastive_loss)
        if metrics == "auto":
            metrics = [keras.metrics.CategoricalAccuracy(name="image_to_text_accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    @staticmethod
    def _pair_targets(y, y_pred):
        if y is not None:
            return y
        return ops.eye(ops.shape(y_pred)[0], dtype=y_pred.dtype)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x=x,
            y=self._pair_targets(y, y_pred),
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._pair_targets(y, y_pred), y_pred, sample_weight)
