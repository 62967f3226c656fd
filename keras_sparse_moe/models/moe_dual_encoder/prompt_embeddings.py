"""Text embeddings of prompts from a dual encoder task, as arrays: packing
prompts for the text tower and prompt-ensembled class embeddings."""

import numpy as np

from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
    MoEDualEncoderPreprocessor,
)


def pack_prompts(model, texts):
    """`{"token_ids", "padding_mask"}` int32 arrays `(len(texts), length)`
    for the text tower of `model` (a dual encoder task), tokenized by its
    preprocessor.

    Example:
    >>> from keras_sparse_moe.presets import from_preset
    >>> task = from_preset("limoe_tiny", load_weights=False)
    >>> pack_prompts(task, ["a photo of the digit one."])["token_ids"].shape
    (1, 16)
    """
    preprocessor = model.preprocessor or MoEDualEncoderPreprocessor(
        sequence_length=model.backbone.max_sequence_length
    )
    packed = preprocessor({"prompts": list(texts)})
    return {key: np.asarray(packed[key]).astype("int32") for key in ("token_ids", "padding_mask")}


def class_text_embeddings(model, prompts):
    """Prompt-ensembled class embeddings `(num_classes, dim)` from lists of
    prompts per class (mean of normalised prompt embeddings, re-normalised).

    Example:
    >>> from keras_sparse_moe.presets import from_preset
    >>> task = from_preset("limoe_tiny", load_weights=False)
    >>> class_text_embeddings(task, [["a photo of a one."], ["a two.", "the two."]]).shape
    (2, 64)
    """
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
