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
