"""Per-group dispatch and combine, for expert parallelism.

Same maths as `gather_dispatch` / `gather_combine` / `dense_combine` in
`dispatch.py`, but every gather reads within its own routing group
(`take_along_axis` over the group's `S` tokens, batched over `G`) instead
of indexing into the flattened tokens of all groups. Under an
expert-parallel `keras.distribution` (JAX) the group axis stays split like
the batch, so the gathers are local to each device, and the only exchange is
the change of layout between group-major `(G, E, C, D)` (split on `G`) and
expert-major `(E, G * C, D)` (split on `E`): XLA compiles it to an
all-to-all, in the forward and in the backward pass. Each device then sends
only its own groups' slots and gets back only its own tokens' outputs.

Without a distribution the sharding constraints are no-ops and the functions
return the same values as the flat ones (`SparseMoE` keeps using those on a
single device).
"""

from keras import ops

from keras_sparse_moe.distribution.constraints import constrain_expert_tensor
from keras_sparse_moe.distribution.constraints import constrain_group_tensor


def _with_zero_slot(x):
    """Append a zero row to every group: index `x.shape[1]` reads zeros."""
    return ops.concatenate([x, ops.zeros_like(x[:, :1])], axis=1)


def grouped_gather_dispatch(x, slot_token, batch_size=None):
    """Expert inputs `(E, G * C, D)` from grouped tokens, gathering per group.

    Args:
        x: (G, S, D) tokens.
        slot_token: int (G, E, C), token of each slot within its group;
            `S` marks an empty slot (it reads zeros).
        batch_size: int or None, examples the groups were cut from (checks
            that no group straddles two devices).

    Returns:
        (E, G * C, D) expert inputs, split on `E` under expert parallelism.

    Example:
    >>> import numpy as np
    >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    >>> slot_token = np.array([[[0, 3]], [[2, 1]]], "int32")  # G=2, E=1, C=2
    >>> np.asarray(grouped_gather_dispatch(x, slot_token))[0].tolist()
    [[0.0, 1.0], [0.0, 0.0], [10.0, 11.0], [8.0, 9.0]]
    """
    num_groups, group_size, dim = x.shape
    _, num_experts, capacity = slot_token.shape
    x = constrain_group_tensor(x, batch_size, group_size)
    index = ops.reshape(ops.minimum(slot_token, group_size), (num_groups, -1, 1))
    slots = ops.take_along_axis(_with_zero_slot(x), index, axis=1)  # (G, E*C, D)
    slots = constrain_group_tensor(ops.reshape(slots, (num_groups, num_experts, capacity, dim)))
    slots = ops.transpose(slots, (1, 0, 2, 3))  # (E, G, C, D): the all-to-all
    return constrain_expert_tensor(ops.reshape(slots, (num_experts, -1, dim)))


def grouped_dense_dispatch(x, dispatch_weights, batch_size=None):
    """`(G, S, D)` x `(G, S, E, C)` -> `(E, G * C, D)`, mixing tokens within
    each group on its own device (soft routing).

    Example:
    >>> import numpy as np
    >>> x = np.ones((1, 4, 3), "float32")
    >>> weights = np.full((1, 4, 2, 2), 0.25, "float32")
    >>> np.asarray(grouped_dense_dispatch(x, weights)).shape
    (2, 2, 3)
    """
    num_groups, group_size, dim = x.shape
    num_experts = dispatch_weights.shape[2]
    x = constrain_group_tensor(x, batch_size, group_size)
    slots = ops.einsum("gsec,gsd->gecd", ops.cast(dispatch_weights, x.dtype), x)
    slots = ops.transpose(constrain_group_tensor(slots), (1, 0, 2, 3))  # the all-to-all
    return constrain_expert_tensor(ops.reshape(slots, (num_experts, -1, dim)))


def _to_groups(expert_outputs, capacity):
    """`(E, G * C, D)` split on `E` -> `(G, E, C, D)` split on `G`."""
    num_experts, _, dim = expert_outputs.shape
    y = constrain_expert_tensor(ops.reshape(expert_outputs, (num_experts, -1, capacity, dim)))
    return constrain_group_tensor(ops.transpose(y, (1, 0, 2, 3)))


def grouped_gather_combine(expert_outputs, expert_index, position, gates, capacity):
    """Token choice: gate-weighted sum of each token's expert outputs, per group.

    Args:
        expert_outputs: (E, G * C, D).
        expert_index: int (G, S, K).
        position: int (G, S, K), slot of each assignment in its expert.
        gates: (G, S, K); 0 for dropped assignments.
        capacity: int `C`.

    Returns:
        (G, S, D).

    Example:
    >>> import numpy as np
    >>> outputs = np.arange(8, dtype="float32").reshape(2, 2, 2)  # E=2, G=1, C=2
    >>> index = np.array([[[1, 0]]], "int32")  # one token, experts 1 and 0
    >>> position = np.array([[[0, 2]]], "int32")  # second choice dropped
    >>> gates = np.array([[[0.5, 0.0]]], "float32")
    >>> np.asarray(grouped_gather_combine(outputs, index, position, gates, 2)).tolist()
    [[[2.0, 2.5]]]
    """
    y = _to_groups(expert_outputs, capacity)
    num_groups, num_experts, _, dim = y.shape
    top_k = expert_index.shape[-1]
    flat = _with_zero_slot(ops.reshape(y, (num_groups, num_experts * capacity, dim)))
    index = expert_index * capacity + position
    index = ops.where(position < capacity, index, num_experts * capacity)
    gates = ops.cast(gates, flat.dtype)
    combined = None
    for k in range(top_k):
        term = ops.take_along_axis(flat, index[:, :, k:k + 1], axis=1) * gates[:, :, k:k + 1]
        combined = term if combined is None else combined + term
    return combined


def grouped_dense_combine(expert_outputs, combine_weights):
    """`(E, G * C, D)` x `(G, S, E, C)` -> `(G, S, D)`, summed within each group
    (expert choice, soft routing).

    Example:
    >>> import numpy as np
    >>> outputs = np.ones((2, 2, 3), "float32")  # E=2, G=1, C=2
    >>> weights = np.full((1, 4, 2, 2), 0.25, "float32")
    >>> np.asarray(grouped_dense_combine(outputs, weights)).shape
    (1, 4, 3)
    """
    capacity = combine_weights.shape[-1]
    y = _to_groups(expert_outputs, capacity)
    weights = ops.cast(combine_weights, y.dtype)
    return ops.einsum("gsec,gecd->gsd", weights, y)
