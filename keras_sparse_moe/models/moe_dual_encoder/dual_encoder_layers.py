"""Small layers of the MoE dual encoders: input shape check, modality
embedding, token pooling, the contrastive head (learnable temperature and
bias) and the zero-shot class-embedding table."""

import math

import keras
from keras import ops

from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

POOLING_MODES = ("first", "mean", "last")


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class InputShapeCheck(keras.layers.Layer):
    """Identity layer that rejects inputs whose (static) shape after the batch
    axis differs from `expected_shape`, with a message naming the input.

    Keras' own input check is skipped on some `predict` paths; with this
    layer first in a tower a wrongly sized batch always fails clearly (at
    trace time under `jit`/`tf.function`).

    Args:
        expected_shape: tuple of ints, the shape without the batch axis.
        input_name: str, used in the error message.
        hint: str appended to the error message.

    Example:
    >>> import numpy as np
    >>> check = InputShapeCheck((4,), "token_ids")
    >>> tuple(check(np.zeros((2, 4))).shape)
    (2, 4)
    """

    def __init__(self, expected_shape, input_name="inputs", hint="", **kwargs):
        super().__init__(**kwargs)
        self.expected_shape = tuple(int(v) for v in expected_shape)
        self.input_name = str(input_name)
        self.hint = str(hint)

    def call(self, inputs):
        shape = tuple(inputs.shape[1:])
        known = all(isinstance(v, int) for v in shape)
        if len(shape) != len(self.expected_shape) or (known and shape != self.expected_shape):
            expected = ", ".join(str(v) for v in self.expected_shape)
            raise ValueError(
                f"`{self.input_name}` must have shape (batch, {expected}); received shape "
                f"{tuple(inputs.shape)}. {self.hint}".strip()
            )
        return inputs

    def compute_output_spec(self, inputs):
        # From `inputs.shape` (not `compute_output_shape`), so that arrays
        # work too, as in `model.compute_output_spec(numpy_inputs)`. Float
        # inputs come out in the compute dtype, as `__call__` casts them.
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if "float" in dtype:
            dtype = self.compute_dtype
        return keras.KerasTensor(tuple(inputs.shape), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "expected_shape": self.expected_shape,
                "input_name": self.input_name,
                "hint": self.hint,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class ModalityEmbedding(keras.layers.Layer):
    """Adds a learned vector (one per modality) to every token.

    In a tower shared by images and text (LIMoE) it tells the shared blocks
    which modality a token belongs to.

    Example:
    >>> import numpy as np
    >>> tuple(ModalityEmbedding()(np.zeros((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    """

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding",
            shape=(input_shape[-1],),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class TokenPooling(keras.layers.Layer):
    """Pools a token sequence `(batch, tokens, dim)` to `(batch, dim)`.

    Modes: `"first"` (class token), `"mean"` (mean over the tokens where
    `padding_mask` is true, all tokens without a mask), `"last"` (the last
    token where `padding_mask` is true: the end-of-sequence token of text
    packed with an end token; the last token without a mask).

    Args:
        mode: one of `"first"`, `"mean"`, `"last"`.

    Call arguments:
        inputs: (batch, tokens, dim).
        padding_mask: optional (batch, tokens), true/1 for real tokens.

    Example:
    >>> import keras, numpy as np
    >>> x = np.arange(12, dtype="float32").reshape(1, 3, 4)
    >>> pooled = TokenPooling("last")(x, padding_mask=np.array([[1, 1, 0]]))
    >>> keras.ops.convert_to_numpy(pooled).tolist()
    [[4.0, 5.0, 6.0, 7.0]]
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, POOLING_MODES)

    def build(self, inputs_shape, padding_mask_shape=None):
        # No weights; the shapes of both call arguments are accepted (Keras
        # builds a layer called with several tensors from one shape each).
        self.built = True

    def call(self, inputs, padding_mask=None):
        tokens = inputs.shape[1]
        if self.mode == "first":
            return inputs[:, 0, :]
        if padding_mask is None:
            if self.mode == "mean":
                return ops.mean(inputs, axis=1)
            return inputs[:, -1, :]
        mask = ops.cast(ops.cast(padding_mask, "bool"), inputs.dtype)
        if self.mode == "mean":
            weights = mask / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        else:
            last = ops.maximum(ops.cast(ops.sum(mask, axis=1), "int32") - 1, 0)
            weights = ops.one_hot(last, tokens, dtype=inputs.dtype)
        return ops.einsum("bt,btd->bd", weights, inputs)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class ContrastiveHead(keras.layers.Layer):
    """Image-text logits `exp(t) * image @ text^T + b` of L2-normalised
    embeddings, with a learnable log-temperature `t` (clipped at
    `log(max_logit_scale)`, as in CLIP) and a learnable bias `b` (used by the
    sigmoid loss; the softmax loss is invariant to it).

    Args:
        logit_scale_init: float > 0, initial `exp(t)` (CLIP: 1/0.07; SigLIP: 10).
        logit_bias_init: float, initial `b` (SigLIP: -10).
        max_logit_scale: float > 0, upper bound of `exp(t)`.

    Call arguments:
        image_embeddings: (num_images, dim), L2-normalised.
        text_embeddings: (num_texts, dim), L2-normalised.

    Returns:
        Logits of shape (num_images, num_texts).

    Example:
    >>> import keras, numpy as np
    >>> head = ContrastiveHead(logit_scale_init=10.0, logit_bias_init=-10.0)
    >>> logits = head(np.eye(2, dtype="float32"), np.eye(2, dtype="float32"))
    >>> keras.ops.convert_to_numpy(logits).tolist()
    [[0.0, -10.0], [-10.0, 0.0]]
    """

    def __init__(self, logit_scale_init=1.0 / 0.07, logit_bias_init=0.0, max_logit_scale=100.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.logit_scale_init = check_float("logit_scale_init", logit_scale_init, 0.0, strict=True)
        self.logit_bias_init = check_float("logit_bias_init", logit_bias_init)
        self.max_logit_scale = check_float("max_logit_scale", max_logit_scale, 0.0, strict=True)

    def build(self, image_embeddings_shape, text_embeddings_shape=None):
        self.logit_scale = self.add_weight(
            name="logit_scale",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.logit_scale_init)),
        )
        self.logit_bias = self.add_weight(
            name="logit_bias",
            shape=(),
            initializer=keras.initializers.Constant(self.logit_bias_init),
        )

    def scale(self):
        """The current multiplier `exp(t)` (clipped)."""
        return ops.exp(ops.minimum(self.logit_scale, math.log(self.max_logit_scale)))

    def call(self, image_embeddings, text_embeddings):
        scores = ops.matmul(
            ops.cast(image_embeddings, "float32"),
            ops.transpose(ops.cast(text_embeddings, "float32")),
        )
        return scores * ops.cast(self.scale(), "float32") + ops.cast(self.logit_bias, "float32")

    def compute_output_shape(self, image_embeddings_shape, text_embeddings_shape):
        return (image_embeddings_shape[0], text_embeddings_shape[0])

    def compute_output_spec(self, image_embeddings, text_embeddings):
        # float32 under any policy, as `call` computes them.
        shape = self.compute_output_shape(image_embeddings.shape, text_embeddings.shape)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "logit_scale_init": self.logit_scale_init,
                "logit_bias_init": self.logit_bias_init,
                "max_logit_scale": self.max_logit_scale,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class ClassEmbeddings(keras.layers.Layer):
    """A fixed (non-trainable) table of class text embeddings for zero-shot
    classification; calling it on anything returns the `(num_classes, dim)`
    table.

    Args:
        num_classes: int >= 1.
        embedding_dim: int >= 1.

    Example:
    >>> import numpy as np
    >>> table = ClassEmbeddings(3, 4)
    >>> tuple(table(np.zeros((2, 4), "float32")).shape)
    (3, 4)
    """

    def __init__(self, num_classes, embedding_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_classes, self.embedding_dim),
            initializer="zeros",
            trainable=False,
        )

    def call(self, inputs):
        # In the compute dtype, like any layer's output (the table is stored
        # in the variable dtype, float32 under a mixed policy).
        return ops.cast(self.embeddings, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (self.num_classes, self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "embedding_dim": self.embedding_dim})
        return config
