"""Dropless experts without padding: assignments sorted by expert.

With dropless token choice every `(token, expert)` assignment is processed.
Padding each expert to a buffer that could hold the whole group (the
capacity of the padded path, `dispatch.py`) costs `E / K` times the routed
work. Here (as in MegaBlocks) the `N * K` assignments are sorted by expert
and each expert multiplies only its own contiguous rows
(`grouped_matmul.grouped_matmul`), so the expert cost per token is that of
`K` MLPs whatever the number of experts. Sorting, gathers and counts are
`keras.ops` and cost `O(N * K * (D + E))`, like the router.

Shapes: `N` tokens, `K` experts per token, `M = N * K` assignments, `E`
experts, `D` model width, `H` expert width.
"""

from keras import ops

from keras_sparse_moe.layers.grouped_matmul import grouped_matmul


def sort_assignments(expert_index, num_experts, token_mask=None):
    """Order the `(token, choice)` assignments by expert.

    Args:
        expert_index: int (N, K), the experts chosen by each token.
        num_experts: int `E`.
        token_mask: optional bool (N,); assignments of masked tokens are
            placed after every group and processed by no expert.

    Returns:
        A dict of int32 tensors: `token` (M,) the token of each sorted row,
        `group_sizes` (E,) rows per expert (they sum to the number of
        unmasked assignments) and `position` (N, K) the sorted row of each
        assignment.
    """
    top_k = ops.shape(expert_index)[1]
    expert = ops.reshape(ops.cast(expert_index, "int32"), (-1,))
    if token_mask is not None:
        valid = ops.reshape(
            ops.repeat(ops.expand_dims(ops.cast(token_mask, "bool"), -1), top_k, axis=1), (-1,)
        )
        expert = ops.where(valid, expert, num_experts)
    order = ops.cast(ops.argsort(expert), "int32")  # any order within an expert
    one_hot = ops.equal(ops.expand_dims(expert, -1), ops.arange(num_experts, dtype="int32"))
    group_sizes = ops.sum(ops.cast(one_hot, "int32"), axis=0)
    # Inverse permutation (where each assignment went), as a second sort:
    # `ops.scatter` is a Python loop over the indices on PyTorch.
    position = ops.argsort(order)
    return {
        "token": order // top_k,
        "group_sizes": group_sizes,
        "position": ops.reshape(ops.cast(position, "int32"), (-1, top_k)),
    }


def ragged_dispatch(x, sorting):
    """Expert inputs `(M, D)`: the token of every sorted assignment."""
    return ops.take(x, sorting["token"], axis=0)


def ragged_combine(expert_outputs, sorting, gates):
    """Token outputs `(N, D)`: gate-weighted sum of the token's `K` rows.

    Args:
        expert_outputs: (M, D), rows in sorted order.
        sorting: from `sort_assignments`.
        gates: (N, K), the gate of each assignment (0 for masked tokens).
    """
    position = sorting["position"]
    gates = ops.cast(gates, expert_outputs.dtype)
    combined = None
    for k in range(ops.shape(position)[1]):
        term = ops.take(expert_outputs, position[:, k], axis=0) * ops.expand_dims(gates[:, k], -1)
        combined = term if combined is None else combined + term
    return combined


def ragged_mlp(
    x,
    group_sizes,
    kernel_in,
    kernel_out,
    activation,
    kernel_gate=None,
    bias_in=None,
    bias_out=None,
    hidden_fn=None,
):
    """Expert MLPs on rows sorted by expert.

    Computes, for the rows of expert `e`,
    `act(x W_in[e] + b_in[e]) W_out[e] + b_out[e]` (gated:
    `act(x W_gate[e]) * (x W_in[e] + b_in[e])`), with one grouped matmul per
    weight matrix.

    Args:
        x: (M, D) rows, grouped by expert in expert order.
        group_sizes: int (E,), rows of each expert (sum <= M; later rows
            belong to no expert and are not computed).
        kernel_in, kernel_out: (E, D, H) and (E, H, D).
        activation: callable.
        kernel_gate: optional (E, D, H), gated MLP.
        bias_in, bias_out: optional (E, H) and (E, D).
        hidden_fn: optional callable applied to the hidden activations
            (e.g. dropout).

    Returns:
        (M, D).
    """
    hidden = grouped_matmul(x, kernel_in, group_sizes, bias=bias_in)
    if kernel_gate is not None:
        hidden = activation(grouped_matmul(x, kernel_gate, group_sizes)) * hidden
    else:
        hidden = activation(hidden)
    if hidden_fn is not None:
        hidden = hidden_fn(hidden)
    return grouped_matmul(hidden, kernel_out, group_sizes, bias=bias_out)
