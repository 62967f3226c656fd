"""Deterministic ops, so that a seeded run repeats bit for bit.

A seed fixes the initial weights, data order and augmentation, but
TensorFlow's multi-threaded CPU kernels (and some PyTorch kernels) add up
floating-point numbers in an order that changes from run to run; over a
training run the differences grow until two runs of the same command differ
by whole points of accuracy. `enable_deterministic_ops()` switches to the
deterministic kernels of the active backend, process-wide and for good:

- TensorFlow: `tf.config.experimental.enable_op_determinism()`; it also
  makes the `tf.data` input pipelines deterministic, so it is enabled on
  every backend (the recipes' pipelines are `tf.data`).
- PyTorch: `torch.use_deterministic_algorithms(True)`.
- JAX: XLA's CPU kernels are deterministic already.

Runs repeat on the same machine and software; another CPU type (e.g. with
other vector instructions) or library version may still give other numbers.
"""

import logging

logger = logging.getLogger(__name__)


def enable_deterministic_ops():
    """Use deterministic kernels from now on in this process.

    Returns:
        The names of the libraries switched, e.g. `["tensorflow", "torch"]`.

    Example:
    >>> "tensorflow" in enable_deterministic_ops()  # doctest: +SKIP
    True
    """
    import keras
    import tensorflow as tf

    switched = []
    tf.config.experimental.enable_op_determinism()
    switched.append("tensorflow")
    if keras.backend.backend() == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
        switched.append("torch")
    logger.debug("Deterministic ops enabled: %s.", ", ".join(switched))
    return switched
