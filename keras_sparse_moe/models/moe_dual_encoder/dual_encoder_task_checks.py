"""Input checks shared by the tasks built on a dual encoder."""

from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    check_task_inputs,
)


def check_dual_encoder_backbone(backbone):
    """Raise a `ValueError` unless `backbone` is a `MoEDualEncoderBackbone`."""
    if not isinstance(backbone, MoEDualEncoderBackbone):
        raise ValueError(
            "Argument `backbone` must be a MoEDualEncoderBackbone (LIMoEBackbone or "
            f"MoETwoTowerBackbone); received {type(backbone).__name__}."
        )


class DualEncoderInputChecks:
    """Mixin for a keras-hub `Task` on a dual encoder (listed before the
    `Task` base): `fit`, `evaluate` and `predict` first check the shapes of
    array inputs (`check_task_inputs`), so a wrongly sized batch fails with a
    clear message rather than deep in the backend."""

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`, first checking the shapes of array inputs."""
        check_task_inputs(self, x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """`keras.Model.evaluate`, first checking the shapes of array inputs."""
        check_task_inputs(self, x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, first checking the shapes of array inputs."""
        check_task_inputs(self, x)
        return super().predict(x, *args, **kwargs)
