"""Image-text contrastive losses: symmetric softmax InfoNCE (CLIP, Radford et
al. 2021) and the pairwise sigmoid loss (SigLIP, Zhai et al. 2023).

Both take `logits` of shape `(batch, batch)`, entry `[i, j]` being the score
of image `i` with text `j`, and `targets` of the same shape with 1 where the
pair matches (`eye(batch)` for a batch of pairs) and 0 elsewhere. They return
one loss value per example; the Keras `Loss` wrappers average them.
"""

import keras
from keras import ops

CONTRASTIVE_LOSSES = ("softmax", "sigmoid")


def _check_square(logits):
    shape = tuple(logits.shape)
    if len(shape) != 2 or (
        isinstance(shape[0], int) and isinstance(shape[1], int) and shape[0] != shape[1]
    ):
        raise ValueError(
            "Contrastive logits must be a square (batch, batch) matrix of image-text "
            f"scores; received shape {shape}."
        )


def softmax_contrastive_loss(targets, logits):
    """Symmetric InfoNCE: mean of the image->text and text->image softmax
    cross-entropies, per example.

    Example:
    >>> import numpy as np
    >>> logits = np.array([[10.0, 0.0], [0.0, 10.0]], "float32")
    >>> loss = softmax_contrastive_loss(np.eye(2, dtype="float32"), logits)
    >>> bool(np.all(np.asarray(loss) < 1e-3))
    True
    """
    logits = ops.cast(logits, "float32")
    _check_square(logits)
    targets = ops.cast(targets, "float32")
    image_to_text = -ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1)
    text_to_image = -ops.sum(targets * ops.log_softmax(logits, axis=0), axis=0)
    return 0.5 * (image_to_text + text_to_image)


def sigmoid_contrastive_loss(targets, logits):
    """SigLIP: `-sum_j log sigmoid(z_ij * logits_ij)` per image `i`, with
    `z = 2 * targets - 1` (+1 for matching pairs, -1 otherwise).

    Example:
    >>> import numpy as np
    >>> logits = np.array([[10.0, -10.0], [-10.0, 10.0]], "float32")
    >>> loss = sigmoid_contrastive_loss(np.eye(2, dtype="float32"), logits)
    >>> bool(np.all(np.asarray(loss) < 1e-3))
    True
    """
    logits = ops.cast(logits, "float32")
    _check_square(logits)
    signs = 2.0 * ops.cast(targets, "float32") - 1.0
    return -ops.sum(ops.log_sigmoid(signs * logits), axis=1)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SoftmaxContrastiveLoss(keras.losses.Loss):
    """Symmetric softmax InfoNCE loss (CLIP) on `(batch, batch)` logits.

    `y_true` is the `(batch, batch)` matrix of matching pairs (usually the
    identity); `y_pred` the image-text logits.

    Example:
    >>> import numpy as np
    >>> loss = SoftmaxContrastiveLoss()
    >>> value = loss(np.eye(3, dtype="float32"), np.zeros((3, 3), "float32"))
    >>> round(float(value), 4)  # log(3)
    1.0986
    """

    def __init__(self, name="softmax_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return softmax_contrastive_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SigmoidContrastiveLoss(keras.losses.Loss):
    """Pairwise sigmoid loss (SigLIP) on `(batch, batch)` logits.

    Example:
    >>> import numpy as np
    >>> loss = SigmoidContrastiveLoss()
    >>> value = loss(np.eye(2, dtype="float32"), np.zeros((2, 2), "float32"))
    >>> round(float(value), 4)  # 2 * log(2)
    1.3863
    """

    def __init__(self, name="sigmoid_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return sigmoid_contrastive_loss(y_true, y_pred)


def get_contrastive_loss(kind):
    """`"softmax"` -> `SoftmaxContrastiveLoss()`, `"sigmoid"` ->
    `SigmoidContrastiveLoss()`."""
    if kind == "softmax":
        return SoftmaxContrastiveLoss()
    if kind == "sigmoid":
        return SigmoidContrastiveLoss()
    raise ValueError(
        f"Argument `contrastive_loss` must be one of {list(CONTRASTIVE_LOSSES)}; "
        f"received {kind!r}."
    )
