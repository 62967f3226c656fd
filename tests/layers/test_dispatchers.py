"""Dispatchers move tokens to expert slots and back as a NumPy loop does."""

import numpy as np
import pytest

from keras_sparse_moe.layers.dispatchers import DenseDispatcher
from keras_sparse_moe.layers.dispatchers import GatherDispatcher
from keras_sparse_moe.layers.dispatchers import RaggedDispatcher
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import to_numpy

G, S, E, C, K, D = 2, 5, 3, 2, 2, 4


def _assignments(seed):
    """Token-choice style assignments: distinct experts per token, slots
    filled in token order, some dropped (position >= C)."""
    rng = np.random.default_rng(seed)
    expert_index = np.stack([
        np.stack([rng.permutation(E)[:K] for _ in range(S)]) for _ in range(G)
    ]).astype("int32")
    position = np.zeros((G, S, K), "int32")
    slot_token = np.full((G, E, C), S, "int32")
    for g in range(G):
        count = np.zeros(E, int)
        for k in range(K):
            for s in range(S):
                e = expert_index[g, s, k]
                position[g, s, k] = count[e]
                if count[e] < C:
                    slot_token[g, e, count[e]] = s
                count[e] += 1
    gates = rng.uniform(0.1, 1.0, (G, S, K)).astype("float32")
    gates = np.where(position < C, gates, 0.0).astype("float32")
    return expert_index, position, gates, slot_token


def _reference_dispatch(x, slot_token):
    out = np.zeros((E, G * C, D))
    for g in range(G):
        for e in range(E):
            for c in range(C):
                if slot_token[g, e, c] < S:
                    out[e, g * C + c] = x[g, slot_token[g, e, c]]
    return out


def test_gather_dispatcher_per_assignment_combine():
    x = random_tokens((G, S, D), seed=0)
    expert_index, position, gates, slot_token = _assignments(1)
    dispatcher = GatherDispatcher(slot_token, expert_index=expert_index,
                                  expert_position=position, gates=gates)
    np.testing.assert_allclose(to_numpy(dispatcher.dispatch(x)),
                               _reference_dispatch(x, slot_token), atol=1e-6)
    outputs = random_tokens((E, G * C, D), seed=2)
    expected = np.zeros((G, S, D))
    for g in range(G):
        for s in range(S):
            for k in range(K):
                if position[g, s, k] < C:
                    row = g * C + position[g, s, k]
                    expected[g, s] += gates[g, s, k] * outputs[expert_index[g, s, k], row]
    np.testing.assert_allclose(to_numpy(dispatcher.combine(outputs)), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["gather", "dense"])
def test_combine_weights_dispatchers(kind):
    rng = np.random.default_rng(3)
    x = random_tokens((G, S, D), seed=4)
    combine = rng.uniform(size=(G, S, E, C)).astype("float32")
    outputs = random_tokens((E, G * C, D), seed=5)
    if kind == "gather":
        _, _, _, slot_token = _assignments(6)
        dispatcher = GatherDispatcher(slot_token, combine_weights=combine)
        expected_in = _reference_dispatch(x, slot_token)
    else:
        weights = rng.uniform(size=(G, S, E, C)).astype("float32")
        dispatcher = DenseDispatcher(weights, combine)
        expected_in = np.einsum("gsec,gsd->egcd", weights, x).reshape(E, G * C, D)
    np.testing.assert_allclose(to_numpy(dispatcher.dispatch(x)), expected_in, atol=1e-5)
    expected_out = np.einsum("gsec,egcd->gsd", combine, outputs.reshape(E, G, C, D))
    np.testing.assert_allclose(to_numpy(dispatcher.combine(outputs)), expected_out, atol=1e-5)
    assert dispatcher.expert_major and dispatcher.expert_kwargs == {}


def test_ragged_dispatcher_sorted_rows_and_combine():
    x = random_tokens((G, S, D), seed=7)
    expert_index, _, gates, _ = _assignments(8)
    mask = np.ones((G, S), bool)
    mask[1, 3:] = False
    gates = np.where(mask[..., None], gates, 0.0).astype("float32")  # as routers give
    dispatcher = RaggedDispatcher(expert_index, gates, E, token_mask=mask)
    assert not dispatcher.expert_major
    rows = to_numpy(dispatcher.dispatch(x))
    sizes = to_numpy(dispatcher.expert_kwargs["group_sizes"])
    flat_index, flat_mask = expert_index.reshape(-1, K), mask.reshape(-1)
    # Expert e's rows are the tokens (unmasked) that chose e, in a block.
    np.testing.assert_array_equal(
        sizes, [np.sum((flat_index == e) & flat_mask[:, None]) for e in range(E)]
    )
    start = 0
    for e in range(E):
        expected = sorted(x.reshape(-1, D)[t].tolist()
                          for t in range(G * S) if flat_mask[t] and e in flat_index[t])
        np.testing.assert_allclose(sorted(rows[start:start + sizes[e]].tolist()), expected)
        start += sizes[e]
    # Combine: the rows' outputs (here 2 * row) come back weighted by the gates.
    combined = to_numpy(dispatcher.combine(2.0 * rows))
    expected = 2.0 * x * gates.sum(-1)[..., None]
    np.testing.assert_allclose(combined, expected, atol=1e-5)


def test_bfloat16_dispatcher_rounds_the_moved_data():
    import ml_dtypes

    from keras_sparse_moe.layers import SoftRouter
    from keras_sparse_moe.layers import SparseMoE
    from keras_sparse_moe.layers.dispatchers import Bfloat16Dispatcher

    def bf16(a):
        return np.asarray(a, "float32").astype(ml_dtypes.bfloat16).astype("float64")

    rng = np.random.default_rng(9)
    x = random_tokens((G, S, D), seed=10)
    weights, combine = (rng.uniform(size=(G, S, E, C)).astype("float32") for _ in range(2))
    outputs = random_tokens((E, G * C, D), seed=11)
    dispatcher = Bfloat16Dispatcher(DenseDispatcher(weights, combine))
    np.testing.assert_allclose(
        to_numpy(dispatcher.dispatch(x)),
        np.einsum("gsec,gsd->egcd", weights, bf16(x)).reshape(E, G * C, D), atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(dispatcher.combine(outputs)),
        np.einsum("gsec,egcd->gsd", combine, bf16(outputs).reshape(E, G, C, D)), atol=1e-6)
    assert to_numpy(dispatcher.dispatch(x)).dtype == np.float32
    # The Soft MoE option: the layer's output moves by the rounding only.
    moe = SparseMoE(num_experts=E, intermediate_dim=8, router="soft", slots_per_expert=C,
                    bfloat16_dispatch=True)
    y = to_numpy(moe(x))
    assert moe.get_config()["bfloat16_dispatch"] is True
    clone = SparseMoE.from_config(moe.get_config())
    clone(x)
    clone.set_weights(moe.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x)), y)
    clone.router.bfloat16_dispatch = False
    assert 0 < np.abs(to_numpy(clone(x)) - y).max() < 5e-2
    with pytest.raises(ValueError, match="bfloat16_dispatch.*True or False.*'yes'"):
        SoftRouter(E, bfloat16_dispatch="yes")
