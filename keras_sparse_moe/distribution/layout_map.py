"""Layout map sharding every SparseMoE expert weight along `"expert"`."""

import re

import keras

from keras_sparse_moe.distribution.constraints import EXPERT_AXIS

# Variable paths of `Experts` weights, e.g. "encoder_block_3/moe/experts/kernel_in"
# or, for a stand-alone `Experts` layer, "experts_2/bias_out". Their leading
# axis is the expert axis.
EXPERT_KERNEL_PATTERN = r"(?:.*/)?experts(?:_\d+)?/(?:kernel_in|kernel_gate|kernel_out)"
EXPERT_BIAS_PATTERN = r"(?:.*/)?experts(?:_\d+)?/(?:bias_in|bias_out)"


def is_expert_variable_path(path):
    """True if `path` names an expert weight (leading axis = experts).

    Example:
    >>> is_expert_variable_path("block_0/moe/experts/kernel_in")
    True
    >>> is_expert_variable_path("block_0/moe/router/kernel")
    False
    """
    return bool(
        re.fullmatch(EXPERT_KERNEL_PATTERN, path) or re.fullmatch(EXPERT_BIAS_PATTERN, path)
    )


def expert_layout_map(device_mesh):
    """A `keras.distribution.LayoutMap` for expert parallelism.

    Expert kernels `(E, D, H)`/`(E, H, D)` and biases `(E, H)`/`(E, D)` of
    every `SparseMoE` (any nesting depth) are split along their expert axis
    over the `"expert"` mesh axis; all other weights (router, attention,
    embeddings, norms, heads) are unmatched and so replicated. Optimizer
    slots inherit their variable's layout. Add more entries (e.g. from a
    keras-hub backbone's `get_layout_map` conventions) before building the
    distribution if you also want tensor parallelism elsewhere.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with an `"expert"` axis.

    Returns:
        `keras.distribution.LayoutMap`.

    Example:
    >>> from keras_sparse_moe.distribution import expert_device_mesh
    >>> mesh = expert_device_mesh(num_experts=[4])  # JAX backend
    >>> layout_map = expert_layout_map(mesh)
    >>> layout_map["moe/experts/kernel_in"].axes
    ('expert', None, None)
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "Argument `device_mesh` must be a `keras.distribution.DeviceMesh`; "
            f"received {type(device_mesh).__name__}."
        )
    if EXPERT_AXIS not in device_mesh.axis_names:
        raise ValueError(
            f"Argument `device_mesh` must have an {EXPERT_AXIS!r} axis; received axis "
            f"names {tuple(device_mesh.axis_names)}. Use `expert_device_mesh(...)`."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[EXPERT_KERNEL_PATTERN] = (EXPERT_AXIS, None, None)
    layout_map[EXPERT_BIAS_PATTERN] = (EXPERT_AXIS, None)
    return layout_map
