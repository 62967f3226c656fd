"""Per-backend gradient helper for the layer tests (the one backend-specific
piece of the test suite)."""

import keras
import numpy as np


def loss_and_gradients(layer, x, loss_fn, training=True):
    """Value and gradients of `loss_fn(layer(x)) + sum(layer.losses)`.

    Args:
        layer: a built Keras layer.
        x: NumPy input.
        loss_fn: maps the layer output (backend tensor) to a scalar, with
            `keras.ops`.
        training: passed to the layer.

    Returns:
        `(loss, grads)`: the loss as a float and a dict mapping each trainable
        variable's `path` to its gradient as a NumPy array (zeros when the
        variable does not influence the loss).
    """
    variables = list(layer.trainable_variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(layer(x, training=training)) + sum(layer.losses)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "torch":
        for v in variables:
            v.value.grad = None
        loss = loss_fn(layer(x, training=training)) + sum(layer.losses)
        loss.backward()
        grads = [v.value.grad for v in variables]
        loss = loss.detach()
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def fn(trainable):
            y, _, losses = layer.stateless_call(
                trainable, non_trainable, x, training=training, return_losses=True
            )
            return loss_fn(y) + sum(losses)

        # One compiled program instead of op-by-op dispatch (much faster).
        loss, grads = jax.jit(jax.value_and_grad(fn))([v.value for v in variables])
    else:  # pragma: no cover
        raise NotImplementedError(backend)
    result = {}
    for v, g in zip(variables, grads):
        if g is None:
            result[v.path] = np.zeros(tuple(v.shape), "float32")
        else:
            result[v.path] = np.asarray(keras.ops.convert_to_numpy(g))
    return float(keras.ops.convert_to_numpy(loss)), result
