"""WordPiece tokenizer of the MoE dual encoders."""

import os

import keras
from keras_hub.tokenizers import WordPieceTokenizer

from keras_sparse_moe.presets import PreprocessingPresetMixin
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)

DEFAULT_VOCABULARY_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "assets", "vocab.txt"
)
"""The small shipped vocabulary (built by `examples/digits/build_vocab.py`)."""


def default_vocabulary():
    """The shipped vocabulary as a list of tokens."""
    with open(DEFAULT_VOCABULARY_PATH, encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file if line.rstrip("\n")]


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderTokenizer(PreprocessingPresetMixin, WordPieceTokenizer):
    """Lower-casing WordPiece tokenizer (keras-hub `WordPieceTokenizer`) with
    the special tokens `[PAD]` (id 0 in the shipped vocabulary), `[UNK]`,
    `[START]` and `[END]`.

    Args:
        vocabulary: None (the shipped ~400-token vocabulary of
            `assets/vocab.txt`, see `examples/digits/build_vocab.py`), a list of tokens or a
            vocabulary file path.
        lowercase: bool.
        **kwargs: other `WordPieceTokenizer` arguments.

    Example:
    >>> tokenizer = MoEDualEncoderTokenizer()
    >>> tokens = tokenizer("A photo of the digit seven.")
    >>> tokenizer.detokenize(tokens)
    'a photo of the digit seven .'
    """

    backbone_cls = MoEDualEncoderBackbone

    def __init__(self, vocabulary=None, lowercase=True, **kwargs):
        self._add_special_token("[PAD]", "pad_token")
        self._add_special_token("[START]", "start_token")
        self._add_special_token("[END]", "end_token")
        if vocabulary is None:
            vocabulary = default_vocabulary()
        kwargs.setdefault("oov_token", "[UNK]")
        super().__init__(vocabulary=vocabulary, lowercase=lowercase, **kwargs)
