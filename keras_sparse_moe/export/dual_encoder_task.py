"""A dual-encoder task from a preset or file, and its text tower run on
prompts: what exporting the towers and training and evaluating a dual
encoder share."""

import os

import numpy as np


def load_dual_encoder(model, load_weights=True):
    """A `MoEDualEncoderContrastive` from a preset name / directory, a
    `.keras` file or a model instance.

    Example:
    >>> load_dual_encoder("limoe_tiny").backbone.image_shape
    (8, 8, 1)
    """
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive

    if isinstance(model, MoEDualEncoderContrastive):
        return model
    if isinstance(model, str) and model.endswith(".keras"):
        from keras_sparse_moe.utils.io import load_keras_file

        if not os.path.exists(model):
            raise ValueError(f"Model file {model!r} does not exist.")
        loaded = load_keras_file(model)  # compiled, with its optimizer state
    elif isinstance(model, str):
        from keras_sparse_moe.presets import from_preset

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


def pack_prompts(model, texts):
    """`{"token_ids", "padding_mask"}` int32 arrays `(len(texts), length)`
    for the text tower of `model`, tokenized by its preprocessor."""
    from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
        MoEDualEncoderPreprocessor,
    )

    preprocessor = model.preprocessor or MoEDualEncoderPreprocessor(
        sequence_length=model.backbone.max_sequence_length
    )
    packed = preprocessor({"prompts": list(texts)})
    return {key: np.asarray(packed[key]).astype("int32") for key in ("token_ids", "padding_mask")}


def class_text_embeddings(model, prompts):
    """Prompt-ensembled class embeddings `(num_classes, dim)` from lists of
    prompts per class (mean of normalised prompt embeddings, re-normalised)."""
    counts = [len(group) for group in prompts]
    flat = [prompt for group in prompts for prompt in group]
    text = pack_prompts(model, flat)
    embeddings = np.asarray(
        model.backbone.text_encoder.predict(text, batch_size=len(flat), verbose=0), "float32"
    )
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    table, start = [], 0
    for count in counts:
        table.append(embeddings[start : start + count].mean(0))
        start += count
    table = np.stack(table)
    return table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
