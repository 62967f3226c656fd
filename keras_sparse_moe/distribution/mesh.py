"""Choosing a `("data", "expert")` device mesh."""

import math

import keras

from keras_sparse_moe.distribution.constraints import DATA_AXIS
from keras_sparse_moe.distribution.constraints import EXPERT_AXIS
from keras_sparse_moe.utils.validation import check_int


def require_jax(what):
    """Raise a clear error unless the backend implements `keras.distribution`."""
    backend = keras.backend.backend()
    if backend == "jax":
        return
    alternatives = {
        "tensorflow": (
            "On TensorFlow, Keras trains data-parallel under a "
            "`tf.distribute.MirroredStrategy()` (one host, several GPUs) or "
            "`tf.distribute.MultiWorkerMirroredStrategy()` scope instead; expert "
            "parallelism is not available."
        ),
        "torch": (
            "On PyTorch, wrap a custom training loop in "
            "`torch.nn.parallel.DistributedDataParallel` for data parallelism; "
            "expert parallelism is not available."
        ),
    }
    raise RuntimeError(
        f"{what} needs `keras.distribution`, which Keras implements for the JAX "
        f"backend only; the current backend is {backend!r}. Set KERAS_BACKEND=jax. "
        + alternatives.get(backend, "")
    )


def divisors(n):
    """Sorted divisors of a positive int."""
    return [d for d in range(1, n + 1) if n % d == 0]


def expert_device_mesh(devices=None, expert_parallel=None, data_parallel=None, num_experts=()):
    """A `keras.distribution.DeviceMesh` with axes `("data", "expert")`.

    Devices are laid out row-major: consecutive devices of `devices` form one
    expert-parallel group, so keep the expert axis within a host (fast
    interconnect) where you can.

    Args:
        devices: list of devices (e.g. `keras.distribution.list_devices()`,
            the default) or None.
        expert_parallel: int, devices that split the experts; None: the
            largest divisor of the device count that divides every entry of
            `num_experts` (all devices when `num_experts` is empty), or
            `len(devices) // data_parallel` when `data_parallel` is given.
        data_parallel: int, data-parallel replicas of the expert groups;
            None: `len(devices) // expert_parallel`.
        num_experts: iterable of ints, the expert counts of the model's MoE
            layers; each must be divisible by `expert_parallel`.

    Returns:
        `keras.distribution.DeviceMesh` of shape `(data_parallel,
        expert_parallel)`.

    Example:
    >>> mesh = expert_device_mesh(num_experts=[4])  # JAX backend
    >>> mesh.axis_names
    ('data', 'expert')
    """
    require_jax("An expert-parallel device mesh")
    if devices is None:
        devices = keras.distribution.list_devices()
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise ValueError(
            "Argument `devices` must be a list of devices (e.g. "
            f"`keras.distribution.list_devices()`) or None; received {devices!r}."
        )
    devices = list(devices)
    count = len(devices)
    if count == 0:
        raise ValueError("Argument `devices` must hold at least one device; received [].")
    num_experts = [check_int("num_experts", e, minimum=1) for e in num_experts]
    if expert_parallel is not None:
        expert_parallel = check_int("expert_parallel", expert_parallel, minimum=1)
    if data_parallel is not None:
        data_parallel = check_int("data_parallel", data_parallel, minimum=1)

    if expert_parallel is None and data_parallel is None:
        common = math.gcd(*num_experts) if num_experts else count
        expert_parallel = max(d for d in divisors(count) if common % d == 0)
    if expert_parallel is None:
        if count % data_parallel:
            raise ValueError(
                f"Argument `data_parallel`={data_parallel} must divide the number of "
                f"devices ({count}); allowed: {divisors(count)}."
            )
        expert_parallel = count // data_parallel
    if data_parallel is None:
        if count % expert_parallel:
            raise ValueError(
                f"Argument `expert_parallel`={expert_parallel} must divide the number of "
                f"devices ({count}); allowed: {divisors(count)}."
            )
        data_parallel = count // expert_parallel
    if data_parallel * expert_parallel != count:
        raise ValueError(
            f"The mesh data_parallel x expert_parallel = {data_parallel} x "
            f"{expert_parallel} = {data_parallel * expert_parallel} must equal the "
            f"number of devices ({count})."
        )
    for experts in sorted(set(num_experts)):
        if experts % expert_parallel:
            allowed = [d for d in divisors(count) if math.gcd(*num_experts) % d == 0]
            raise ValueError(
                f"Argument `expert_parallel`={expert_parallel} does not divide "
                f"num_experts={experts}: every expert-parallel device must hold the same "
                f"number of whole experts. With {count} devices and expert counts "
                f"{sorted(set(num_experts))}, allowed expert_parallel values: {allowed}."
            )
    return keras.distribution.DeviceMesh(
        shape=(data_parallel, expert_parallel),
        axis_names=(DATA_AXIS, EXPERT_AXIS),
        devices=devices,
    )
