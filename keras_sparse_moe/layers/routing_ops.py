"""Pure routing math shared by the routers.

Every function here takes and returns backend tensors and uses `keras.ops`
only, so it runs unchanged on TensorFlow, JAX and PyTorch, under `jit`, and
converts to LiteRT builtin ops. Shapes use these letters:

- `G`: number of routing groups, `S`: tokens per group (group size),
- `E`: number of experts, `C`: capacity (slots per expert and group),
- `K`: experts chosen per token (top-k), `D`: model width.

The *compact* routing description produced here is what `SparseMoE` uses to
move tokens with gathers (cost per token independent of `E`); `to_dense`
turns it into the classic `(G, S, E, C)` dispatch/combine tensors of
GShard/V-MoE for analysis and for tests against a NumPy reference.
"""

import math

from keras import ops


CAPACITY_ROUNDINGS = ("ceil", "round")
CAPACITY_FORMULAS = ("clipped", "vmoe")


def compute_capacity(group_size, num_experts, top_k, capacity_factor, rounding="ceil",
                     multiple_of=1, formula="clipped"):
    """Static per-expert capacity of one routing group.

    With the defaults, `ceil(group_size * top_k * capacity_factor /
    num_experts)`, at least 1 and at most `group_size` (a token never picks
    one expert twice, so no expert can receive more than `group_size` tokens
    of a group). With `capacity_factor=None` (dropless) the capacity is
    `group_size`.

    `formula="vmoe"` is V-MoE's `vmoe.moe.compute_capacity` exactly:
    `c = group_size * top_k * capacity_factor / num_experts` in float64
    (multiplied first, divided last, no round-off tolerance), rounded with
    `rounding`, an error if `c < 1`, then rounded up to a multiple of
    `multiple_of`, and *not* capped at the group size. With
    `formula="clipped"` the rounding and `multiple_of` also apply, before the
    clip to `[1, group_size]`.

    Args:
        group_size: int, tokens per routing group.
        num_experts: int, number of experts.
        top_k: int, experts per token (for expert choice: the average number
            of experts per token).
        capacity_factor: float or None.
        rounding: `"ceil"` or `"round"` (Python's round, half to even, as
            vmoe).
        multiple_of: int >= 1, round the capacity up to a multiple of it
            (vmoe's token and expert choice default is 4).
        formula: `"clipped"` (default) or `"vmoe"`.

    Returns:
        A Python int.

    Example:
    >>> compute_capacity(65, 8, 2, 1.25)
    21
    >>> compute_capacity(16, 4, 1, 1.0, multiple_of=4, formula="vmoe")
    4
    >>> compute_capacity(17, 4, 2, 2.0, multiple_of=4, formula="vmoe")  # > group size
    20
    """
    if capacity_factor is None:
        return int(group_size)
    exact = int(group_size) * int(top_k) * float(capacity_factor) / int(num_experts)
    if formula == "vmoe":
        capacity = math.ceil(exact) if rounding == "ceil" else round(exact)
        if capacity < 1:
            raise ValueError(
                f"The capacity ({capacity}) of group_size={group_size}, top_k={top_k}, "
                f"capacity_factor={capacity_factor}, num_experts={num_experts} is below 1 "
                "(vmoe's formula raises here too); use a larger capacity factor."
            )
    elif rounding == "ceil":
        # The small tolerance keeps float round-off from adding a slot, e.g.
        # 100 * 1.1 / 10 = 11.000000000000002 must give 11, not 12.
        capacity = math.ceil(exact - 1e-9)
    else:
        capacity = round(exact)
    multiple_of = int(multiple_of or 1)
    if multiple_of > 1:
        capacity += (-capacity) % multiple_of
    if formula == "vmoe":
        return int(capacity)
    return int(max(1, min(capacity, group_size)))


# Up to this many, `top_k` selects by repeated argmax: XLA:CPU lowers
# `ops.top_k` to a full sort of every row, ~25 ms for 4160 tokens x 64
# experts, while k argmax passes cost well under a millisecond.
_ARGMAX_TOP_K = 8


def top_k(values, k):
    """`ops.top_k(values, k, sorted=True)` along the last axis, fast for small k.

    Ties go to the lower index, as in the stable `top_k` of JAX and
    TensorFlow. Gradients flow to the selected entries only, as with
    `ops.top_k`. The k indices of a row are always distinct: once a row has
    no comparable entry left (all `-inf` or NaN), the lowest unused indices
    are taken.

    Args:
        values: float tensor (..., N).
        k: int, 1 <= k <= N.

    Returns:
        `(top_values, top_indices)`, each (..., k); indices int32.

    Example:
    >>> import numpy as np
    >>> v, i = top_k(np.array([[0.1, 0.7, 0.2, 0.7]], "float32"), 2)
    >>> [int(j) for j in np.asarray(i)[0]]
    [1, 3]
    """
    if k > _ARGMAX_TOP_K:
        top_values, top_indices = ops.top_k(values, k=k, sorted=True)
        return top_values, ops.cast(top_indices, "int32")
    values = ops.convert_to_tensor(values)  # NumPy in: `values * tensor` fails on torch
    num = ops.shape(values)[-1]
    positions = ops.arange(num, dtype="int32")
    remaining = values
    floor = ops.min(values, axis=-1, keepdims=True) - 1.0
    free = None  # entries not picked yet (None: all)
    picked_values, picked_indices = [], []
    for _ in range(k):
        # First index of the row maximum from plain reductions: a fused
        # value-and-index argmax is ~3x slower under XLA:CPU.
        top = ops.max(remaining, axis=-1, keepdims=True)
        candidate = ops.equal(remaining, top)
        first_free = 0
        if free is not None:
            candidate = ops.logical_and(candidate, free)
            first_free = ops.min(ops.where(free, positions, num), axis=-1)
        index = ops.min(ops.where(candidate, positions, num), axis=-1)
        index = ops.where(index < num, index, first_free)
        chosen = ops.equal(ops.expand_dims(index, -1), positions)
        # Exact value of the pick, with the gradient going to it alone.
        # (A product, not a select: LiteRT's full-int8 quantizer requires a
        # select's operands to share one scale, which router values don't.)
        picked_values.append(
            ops.sum(values * ops.cast(chosen, values.dtype), axis=-1, keepdims=True)
        )
        picked_indices.append(ops.expand_dims(index, -1))
        # Below every value of the row, but finite: a -inf constant gives
        # LiteRT's int8 quantizer an infinite scale.
        remaining = ops.where(chosen, floor, remaining)
        free = ops.logical_not(chosen) if free is None else ops.logical_and(
            free, ops.logical_not(chosen))
    if k == 1:
        return picked_values[0], picked_indices[0]
    return (ops.concatenate(picked_values, axis=-1),
            ops.concatenate(picked_indices, axis=-1))


def _gather_rows(x, index):
    """`x[g, index[g, ...]]` for `x` of shape (G, N, ...) and int `index` (G, M)."""
    return ops.take_along_axis(x, index, axis=1)


def token_choice_positions(expert_index, gates, num_experts, batch_priority):
    """Position of each (token, choice) assignment in its expert's buffer.

    Assignments are served in this order: all first choices, then all second
    choices, and so on (GShard / V-MoE). Within one choice level tokens go in
    their order in the group, or, with `batch_priority=True` (V-MoE's Batch
    Priority Routing), by decreasing top-1 gate so that the most confident
    tokens are kept when an expert overflows.

    Args:
        expert_index: int tensor (G, S, K), the chosen experts.
        gates: float tensor (G, S, K), the gate of each choice (the first
            column is used for the priority).
        num_experts: int.
        batch_priority: bool.

    Returns:
        int32 tensor (G, S, K): 0-based position of each assignment within
        its expert, counting all earlier assignments of the group.
    """
    num_tokens = ops.shape(expert_index)[1]
    top_k = ops.shape(expert_index)[2]
    if batch_priority:
        # Stable order by decreasing top-1 gate.
        order = ops.argsort(-gates[:, :, 0], axis=-1)
        expert_index = _gather_rows(expert_index, ops.expand_dims(order, -1))
    # (G, K, S) -> (G, K*S): choice level major, token (priority) minor.
    ordered = ops.reshape(ops.transpose(expert_index, (0, 2, 1)), (-1, top_k * num_tokens))
    ordered = ops.expand_dims(ops.cast(ordered, "int32"), -1)
    one_hot = ops.cast(ops.equal(ordered, ops.arange(num_experts, dtype="int32")), "int32")
    # Running count of assignments to each expert; an assignment's position
    # is the count of its own expert up to and including it, minus one.
    count = ops.cumsum(one_hot, axis=1)
    position = ops.take_along_axis(count, ordered, axis=-1) - 1
    position = ops.transpose(ops.reshape(position, (-1, top_k, num_tokens)), (0, 2, 1))
    if batch_priority:
        inverse = ops.argsort(order, axis=-1)
        position = _gather_rows(position, ops.expand_dims(inverse, -1))
    return ops.cast(position, "int32")


def slots_from_assignments(expert_index, position, keep, num_experts, capacity):
    """Which token fills each expert slot, from the per-assignment view.

    Args:
        expert_index: int tensor (G, S, K).
        position: int tensor (G, S, K), from `token_choice_positions`.
        keep: bool tensor (G, S, K), `position < capacity`.
        num_experts: int.
        capacity: int.

    Returns:
        int32 tensor (G, E, C): the token (0..S-1) in each slot, or `S` for an
        empty slot.
    """
    num_tokens = ops.shape(expert_index)[1]
    top_k = ops.shape(expert_index)[2]
    num_slots = num_experts * capacity
    expert_index = ops.cast(expert_index, "int32")
    slot_id = ops.where(keep, expert_index * capacity + position, num_slots)
    slot_id = ops.reshape(slot_id, (-1, num_tokens * top_k))
    # Sorting by slot id lists the kept assignments expert by expert; expert e
    # owns sorted positions [start_e, start_e + count_e).
    sorted_assignment = ops.cast(ops.argsort(slot_id, axis=-1), "int32")
    kept_expert = ops.reshape(ops.where(keep, expert_index, num_experts),
                              (-1, num_tokens * top_k, 1))
    kept_one_hot = ops.equal(kept_expert, ops.arange(num_experts, dtype="int32"))
    count = ops.sum(ops.cast(kept_one_hot, "int32"), axis=1)  # (G, E)
    start = ops.cumsum(count, axis=1) - count
    slot_range = ops.arange(capacity, dtype="int32")
    sorted_pos = ops.expand_dims(start, -1) + ops.reshape(slot_range, (1, 1, capacity))
    sorted_pos = ops.minimum(sorted_pos, num_tokens * top_k - 1)
    assignment = _gather_rows(
        sorted_assignment, ops.reshape(sorted_pos, (-1, num_slots))
    )
    token = ops.reshape(assignment // top_k, (-1, num_experts, capacity))
    filled = ops.reshape(slot_range, (1, 1, capacity)) < ops.expand_dims(count, -1)
    return ops.where(filled, token, num_tokens)


def expert_choice_slots(probs, capacity):
    """Expert choice routing (Zhou et al. 2022): each expert takes its
    `capacity` highest-scoring tokens of the group.

    Args:
        probs: float tensor (G, S, E), router probabilities.
        capacity: int, tokens taken by each expert.

    Returns:
        `(slot_token, slot_gates)`: int32 (G, E, C) token of every slot and
        float (G, E, C) its gate. Every slot is filled.
    """
    by_expert = ops.transpose(probs, (0, 2, 1))  # (G, E, S)
    slot_gates, slot_token = ops.top_k(by_expert, k=capacity, sorted=True)
    return ops.cast(slot_token, "int32"), slot_gates


def to_dense(routing, num_tokens, num_experts, capacity, dtype="float32"):
    """Classic dense `(G, S, E, C)` dispatch and combine tensors.

    Accepts the compact routing dictionaries returned by the routers
    (`slot_token` plus either per-assignment `gates`/`expert_index`/
    `expert_position` for token choice, or `slot_gates` for expert choice).
    For analysis and tests: `SparseMoE` itself never materialises these for
    the hard routers.

    Returns:
        `(dispatch, combine)`, each (G, S, E, C); `dispatch` is 0/1.
    """
    if "dispatch_weights" in routing:
        return routing["dispatch_weights"], routing["combine_weights"]
    slot_token = routing["slot_token"]  # (G, E, C), S = empty
    # (G, E, C, S+1) one-hot of the token in each slot; drop the "empty" column.
    dispatch = ops.one_hot(slot_token, num_tokens + 1, dtype=dtype)[..., :num_tokens]
    dispatch = ops.transpose(dispatch, (0, 3, 1, 2))  # (G, S, E, C)
    if "slot_gates" in routing:
        gates = ops.cast(routing["slot_gates"], dtype)
        combine = dispatch * ops.expand_dims(gates, 1)
        return dispatch, combine
    # Token choice: the gate of (s, e) is the gate of the choice of s that
    # picked e (each token picks an expert at most once).
    expert_one_hot = ops.one_hot(routing["expert_index"], num_experts, dtype=dtype)
    gate_se = ops.sum(
        expert_one_hot * ops.expand_dims(ops.cast(routing["gates"], dtype), -1), axis=2
    )  # (G, S, E)
    combine = dispatch * ops.expand_dims(gate_se, -1)
    return dispatch, combine
