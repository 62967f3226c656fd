"""Plain data parallelism."""

import keras

from keras_sparse_moe.distribution.mesh import require_jax


def data_parallel_distribution(devices=None, auto_shard_dataset=True):
    """`keras.distribution.DataParallel` over `devices` (JAX backend).

    Every device holds a full copy of the model (experts included) and a
    slice of each batch; gradients are averaged by XLA. The batch size must
    be divisible by the number of devices. On TensorFlow use a
    `tf.distribute.MirroredStrategy()` scope instead; on PyTorch wrap a
    custom loop in `torch.nn.parallel.DistributedDataParallel` (this
    function raises a `RuntimeError` saying so). See docs/distributed.md.

    Args:
        devices: list of devices; default all (`keras.distribution.list_devices()`).
        auto_shard_dataset: bool, shard `tf.data` inputs between processes.

    Returns:
        `keras.distribution.DataParallel`.

    Example:
    >>> distribution = data_parallel_distribution()  # JAX backend
    >>> distribution.device_mesh.axis_names
    ['batch']
    """
    require_jax("data_parallel_distribution")
    return keras.distribution.DataParallel(devices=devices, auto_shard_dataset=auto_shard_dataset)
