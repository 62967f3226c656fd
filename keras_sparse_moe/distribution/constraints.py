"""Sharding constraints on expert tensors.

Under an expert-parallel `keras.distribution` on JAX, the dispatched tensor
`(E, G * C, D)` is pinned to `E` along the `"expert"` mesh axis (and
`G * C` along `"data"` when it divides), so XLA moves tokens to the devices
holding their experts (an all-to-all) instead of gathering every expert's
weights. Everywhere else (TensorFlow, PyTorch, no distribution set, a mesh
without an `"expert"` axis, or symbolic Keras tensors) the helpers return
their input unchanged.
"""

import keras

EXPERT_AXIS = "expert"
DATA_AXIS = "data"


def _active_mesh():
    """The current `DeviceMesh` if it has an expert axis, else None."""
    if keras.backend.backend() != "jax":
        return None
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh
    if mesh is None or EXPERT_AXIS not in mesh.axis_names:
        return None
    return mesh


def expert_parallel_active():
    """Whether a `keras.distribution` with an `"expert"` mesh axis is set (JAX).

    Example:
    >>> expert_parallel_active()  # no distribution set
    False
    """
    return _active_mesh() is not None


def mesh_axis_size(mesh, name):
    """Size of axis `name` of a `DeviceMesh` (1 if the mesh lacks it)."""
    if name not in mesh.axis_names:
        return 1
    return int(mesh.shape[list(mesh.axis_names).index(name)])


def constrain_expert_tensor(x):
    """Shard an expert-major tensor `(E, ...)` along the `"expert"` mesh axis.

    The second axis (the `G * C` slots of a dispatched tensor) is sharded
    along `"data"` when the mesh has that axis and its size divides the
    axis; the rest is replicated. A no-op unless the backend is JAX and the
    current `keras.distribution` has an `"expert"` mesh axis.

    Args:
        x: tensor whose leading axis is the expert axis, e.g. the expert
            inputs or outputs `(E, G * C, D)`.

    Returns:
        `x`, with a sharding constraint when expert parallelism is active.

    Raises:
        ValueError: if the number of experts `E` is not divisible by the
            size of the `"expert"` mesh axis.

    Example:
    >>> import numpy as np
    >>> y = constrain_expert_tensor(np.zeros((4, 6, 8), "float32"))
    >>> tuple(y.shape)
    (4, 6, 8)
    """
    mesh = _active_mesh()
    if mesh is None or isinstance(x, keras.KerasTensor):
        return x
    shape = tuple(x.shape)
    if len(shape) < 1:
        raise ValueError(
            "constrain_expert_tensor expects a tensor whose leading axis is the "
            f"expert axis; received a scalar of shape {shape}."
        )
    experts = mesh_axis_size(mesh, EXPERT_AXIS)
    if shape[0] is not None and shape[0] % experts:
        raise ValueError(
            f"Cannot shard {shape[0]} experts over the {experts} devices of the "
            f"'{EXPERT_AXIS}' mesh axis (mesh {dict(zip(mesh.axis_names, mesh.shape))}): "
            "the number of experts must be divisible by the expert-parallel size."
        )
    axes = [EXPERT_AXIS] + [None] * (len(shape) - 1)
    data = mesh_axis_size(mesh, DATA_AXIS)
    if len(shape) > 1 and data > 1 and shape[1] is not None and shape[1] % data == 0:
        axes[1] = DATA_AXIS
    layout = keras.distribution.TensorLayout(axes, mesh)
    return keras.distribution.distribute_tensor(x, layout)


def _batch_shards(distribution, batch):
    """Number of devices the batch axis of a `(batch, ...)` input is split over."""
    axes = distribution.get_data_layout((batch,)).axes[0]
    if axes is None:
        return 1
    mesh = distribution.device_mesh
    names = axes if isinstance(axes, tuple) else (axes,)
    shards = 1
    for name in names:
        shards *= mesh_axis_size(mesh, name)
    return shards


def constrain_group_tensor(x, batch_size=None, group_size=None):
    """Shard a group-major tensor `(G, ...)` like the batch it comes from.

    Routing groups live on the device that holds their examples, so the
    group axis `G` takes the layout the current distribution gives a batch
    of `G` examples (`ExpertParallel`: over `("data", "expert")`). Tensors
    constrained this way stay on their device; going from this layout to
    `constrain_expert_tensor`'s is what XLA compiles to an all-to-all.

    A no-op unless the backend is JAX and the current `keras.distribution`
    has an `"expert"` mesh axis.

    Args:
        x: tensor whose leading axis is the group axis, e.g. `(G, S, D)`.
        batch_size: int or None, examples in the batch the groups were cut
            from; when given, checks that no group straddles two devices.
        group_size: int or None, tokens per group (for the error message).

    Returns:
        `x`, with a sharding constraint when expert parallelism is active.

    Raises:
        ValueError: if the groups cannot be split over the devices that
            hold the batch, i.e. a group would straddle two devices.

    Example:
    >>> import numpy as np
    >>> y = constrain_group_tensor(np.zeros((4, 6, 8), "float32"))
    >>> tuple(y.shape)
    (4, 6, 8)
    """
    mesh = _active_mesh()
    if mesh is None or isinstance(x, keras.KerasTensor):
        return x
    distribution = keras.distribution.distribution()
    shape = tuple(x.shape)
    groups = shape[0]
    if batch_size is not None and groups is not None:
        check_groups_fit_devices(distribution, batch_size, groups, group_size)
    layout = distribution.get_data_layout(shape)
    return keras.distribution.distribute_tensor(x, layout)


def check_groups_fit_devices(distribution, batch_size, num_groups, group_size=None):
    """Raise a `ValueError` when routing groups would straddle devices.

    The batch of `batch_size` examples is split over some devices by
    `distribution`; its tokens are cut into `num_groups` routing groups.
    Every device must hold whole groups.

    Example:
    >>> check_groups_fit_devices(None, batch_size=8, num_groups=8)
    """
    if distribution is None:
        return
    shards = _batch_shards(distribution, batch_size)
    if num_groups % shards == 0:
        return
    tokens = f"{group_size} tokens" if group_size else "tokens"
    raise ValueError(
        f"The batch of {batch_size} examples is split over {shards} devices, but its "
        f"{num_groups} routing groups (of {tokens}) cannot be: a group would straddle two "
        f"devices. Use a batch size per step that is a multiple of "
        f"{shards * max(1, batch_size // max(num_groups, 1))} (whole groups on every "
        "device), or a smaller `group_size` of SparseMoE."
    )
