"""Getting a `MoEDualEncoderContrastive` from whatever names one."""

import os

from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_contrastive import (
    MoEDualEncoderContrastive,
)
from keras_sparse_moe.presets import from_preset
from keras_sparse_moe.utils.io import load_keras_file


def load_dual_encoder(model, load_weights=True):
    """A `MoEDualEncoderContrastive` from a preset name / directory, a
    `.keras` file or a model instance.

    Args:
        model: a `MoEDualEncoderContrastive` (returned as is), a registered
            preset name or preset directory, or a `.keras` file (loaded
            compiled, with its optimizer state).
        load_weights: bool, load a preset's weights.

    Example:
    >>> task = load_dual_encoder("limoe_tiny", load_weights=False)
    >>> type(task).__name__
    'MoEDualEncoderContrastive'
    """
    if isinstance(model, MoEDualEncoderContrastive):
        return model
    if isinstance(model, str) and model.endswith(".keras"):
        if not os.path.exists(model):
            raise ValueError(f"Model file {model!r} does not exist.")
        loaded = load_keras_file(model)  # compiled, with its optimizer state
    elif isinstance(model, str):
        loaded = from_preset(model, load_weights=load_weights)
    else:
        raise ValueError(
            "Argument `model` must be a preset name or directory, a `.keras` file or a "
            f"MoEDualEncoderContrastive; received {type(model).__name__}."
        )
    if not isinstance(loaded, MoEDualEncoderContrastive):
        raise ValueError(
            f"{model!r} is a {type(loaded).__name__}, not a dual encoder "
            "(MoEDualEncoderContrastive); use a `limoe_*` preset."
        )
    return loaded
