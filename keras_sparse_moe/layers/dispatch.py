"""Moving tokens to expert slots and back.

Two implementations of the same maths:

- *gather* (hard routers): a slot reads its token with one row gather and a
  token reads its `K` expert outputs with another. Cost per token is
  `O(K * D)`, independent of the number of experts and of the group size.
- *dense* (soft routing, expert-choice combine): einsums with `(G, S, E, C)`
  weights, as in GShard/V-MoE. Cost per token is `O(E * C * D)`.

Expert tensors are laid out `(E, G * C, D)` so the experts run as one batched
matmul and, under expert parallelism, the `E` axis can be sharded.
"""

from keras import ops


def _with_zero_row(flat):
    """Append a row of zeros: index `len(flat)` then reads zeros."""
    return ops.concatenate([flat, ops.zeros_like(flat[:1])], axis=0)


def gather_dispatch(x, slot_token):
    """Expert inputs from grouped tokens.

    Args:
        x: (G, S, D) tokens.
        slot_token: int (G, E, C), token of each slot; `S` marks an empty
            slot (it reads zeros).

    Returns:
        (E, G * C, D) expert inputs.
    """
    num_groups, group_size, dim = ops.shape(x)
    _, num_experts, capacity = ops.shape(slot_token)
    flat = _with_zero_row(ops.reshape(x, (-1, dim)))
    offsets = ops.reshape(ops.arange(num_groups, dtype="int32") * group_size, (-1, 1, 1))
    empty = num_groups * group_size
    index = ops.where(slot_token >= group_size, empty, slot_token + offsets)
    index = ops.transpose(index, (1, 0, 2))  # (E, G, C)
    return ops.reshape(ops.take(flat, ops.reshape(index, (-1,)), axis=0),
                       (num_experts, -1, dim))


def gather_combine(expert_outputs, expert_index, position, gates, capacity):
    """Token outputs as the gate-weighted sum of their experts' outputs.

    Args:
        expert_outputs: (E, G * C, D).
        expert_index: int (G, S, K).
        position: int (G, S, K), slot of each assignment in its expert.
        gates: (G, S, K); 0 for dropped assignments.
        capacity: int `C`.

    Returns:
        (G, S, D).
    """
    num_experts, slots, dim = ops.shape(expert_outputs)
    num_groups, group_size, top_k = ops.shape(expert_index)
    flat = _with_zero_row(ops.reshape(expert_outputs, (-1, dim)))
    group = ops.reshape(ops.arange(num_groups, dtype="int32"), (-1, 1, 1))
    index = expert_index * slots + group * capacity + position
    dropped = num_experts * slots
    index = ops.reshape(ops.where(position < capacity, index, dropped), (-1, top_k))
    gates = ops.cast(ops.reshape(gates, (-1, top_k)), flat.dtype)
    # One gather per choice, summed: a sum over a (G, S, K, D) axis instead is
    # ~50x slower under XLA:CPU when G == 1 (a whole batch as one group).
    combined = None
    for k in range(top_k):
        term = ops.take(flat, index[:, k], axis=0) * ops.expand_dims(gates[:, k], -1)
        combined = term if combined is None else combined + term
    return ops.reshape(combined, (-1, group_size, dim))


def dense_dispatch(x, dispatch_weights):
    """`(G, S, D)` x `(G, S, E, C)` -> `(E, G * C, D)`."""
    num_experts = ops.shape(dispatch_weights)[2]
    dim = ops.shape(x)[-1]
    weights = ops.cast(dispatch_weights, x.dtype)
    out = ops.einsum("gsec,gsd->egcd", weights, x)
    return ops.reshape(out, (num_experts, -1, dim))


def dense_combine(expert_outputs, combine_weights):
    """`(E, G * C, D)` x `(G, S, E, C)` -> `(G, S, D)`."""
    _, _, num_experts, capacity = ops.shape(combine_weights)
    dim = ops.shape(expert_outputs)[-1]
    y = ops.reshape(expert_outputs, (num_experts, -1, capacity, dim))
    weights = ops.cast(combine_weights, expert_outputs.dtype)
    return ops.einsum("gsec,egcd->gsd", weights, y)
