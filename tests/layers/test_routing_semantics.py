"""Routing semantics of the three routers and of the full SparseMoE forward,
checked against hand-worked cases and an independent NumPy reference.

Every backend is compared with the same NumPy reference, so passing on all
three backends also shows the backends agree.
"""

import numpy as np
import pytest

from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from tests.layers import numpy_reference as npref
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import set_router_kernel
from tests.layers.moe_helpers import to_numpy

ATOL = 1e-5


def dense(router, x):
    out = router(x, training=False)
    return to_numpy(out["dispatch_mask"]), to_numpy(out["combine_weights"])


def logits_router(router_cls, logits, **kwargs):
    """A router whose logits equal its input (identity kernel)."""
    logits = np.asarray(logits, "float32")
    num_experts = logits.shape[-1]
    router = router_cls(num_experts=num_experts, **kwargs)
    set_router_kernel(router, np.eye(num_experts), logits.shape[1])
    return router


def probs_of(logits):
    return npref.softmax(np.asarray(logits, np.float64))


# ------------------------------------------------------- hand-worked cases
def test_overflow_drops_later_tokens_without_batch_priority():
    # All four tokens prefer expert 0 except the last; capacity is 1.
    logits = [[[0.1, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]]]
    router = logits_router(TokenChoiceRouter, logits, top_k=1, capacity_factor=0.5,
                           batch_priority=False)
    assert router.capacity() == 1
    dispatch, combine = dense(router, np.asarray(logits, "float32"))
    # Expert 0 keeps the first token in group order; tokens 1 and 2 dropped.
    assert dispatch[0, 0, 0, 0] == 1
    assert dispatch[0, 1].sum() == 0 and dispatch[0, 2].sum() == 0
    assert dispatch[0, 3, 1, 0] == 1
    p = probs_of(logits)[0]
    np.testing.assert_allclose(combine[0, 0, 0, 0], p[0, 0], atol=ATOL)
    np.testing.assert_allclose(combine[0, 3, 1, 0], p[3, 1], atol=ATOL)
    assert combine[0, 1].sum() == 0 and combine[0, 2].sum() == 0


@pytest.mark.parametrize("renormalize", [False, True])
def test_batch_priority_keeps_most_confident_tokens(renormalize):
    # With renormalisation every top-1 gate is 1: priority must still follow
    # the router probability.
    logits = [[[0.1, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]]]
    router = logits_router(TokenChoiceRouter, logits, top_k=1, capacity_factor=1.0,
                           batch_priority=True, renormalize_gates=renormalize)
    assert router.capacity() == 2
    dispatch, _ = dense(router, np.asarray(logits, "float32"))
    # Expert 0 keeps tokens 1 (gate .95) then 2 (gate .73); token 0 is dropped.
    assert dispatch[0, 1, 0, 0] == 1
    assert dispatch[0, 2, 0, 1] == 1
    assert dispatch[0, 0].sum() == 0
    assert dispatch[0, 3, 1, 0] == 1


def test_all_first_choices_are_served_before_second_choices():
    # Token 0: first choice expert 1 (p=.73), second choice expert 0.
    # Token 1: first choice expert 0 (p=.62), second choice expert 1.
    # Token 0 has priority and comes first, yet its *second* choice must not
    # take expert 0's only slot from token 1's *first* choice.
    logits = [[[0.0, 1.0], [0.5, 0.0]]]
    for batch_priority in (True, False):
        router = logits_router(TokenChoiceRouter, logits, top_k=2, capacity_factor=0.5,
                               batch_priority=batch_priority)
        assert router.capacity() == 1
        dispatch, _ = dense(router, np.asarray(logits, "float32"))
        expected = np.zeros((1, 2, 2, 1))
        expected[0, 0, 1, 0] = 1
        expected[0, 1, 0, 0] = 1
        np.testing.assert_array_equal(dispatch, expected)


def test_renormalized_gates_sum_to_one():
    logits = random_tokens((2, 6, 4), seed=3)
    router = logits_router(TokenChoiceRouter, logits, top_k=2, capacity_factor=None,
                           renormalize_gates=True)
    _, combine = dense(router, logits)
    np.testing.assert_allclose(combine.sum(axis=(2, 3)), 1.0, atol=ATOL)
    p = probs_of(logits)
    top2 = np.sort(p, axis=-1)[..., ::-1][..., :2]
    expected_first = top2[..., 0] / top2.sum(-1)
    np.testing.assert_allclose(combine.max(axis=(2, 3)), expected_first, atol=ATOL)


def test_dropless_drops_nothing_even_when_all_tokens_pick_one_expert():
    logits = np.zeros((2, 8, 4), "float32")
    logits[..., 0] = np.linspace(2.0, 3.0, 8)  # everybody's first choice
    logits[..., 1] = 1.0
    router = logits_router(TokenChoiceRouter, logits, top_k=2, capacity_factor=None)
    assert router.capacity() == 8
    dispatch, combine = dense(router, logits)
    assert dispatch.sum() == 2 * 8 * 2
    np.testing.assert_array_equal(dispatch.sum(axis=(2, 3)), 2)
    # Each slot holds at most one token, each token uses an expert once.
    assert dispatch.sum(axis=1).max() == 1
    assert dispatch.sum(axis=3).max() == 1
    np.testing.assert_allclose(combine[..., 0, :].sum(-1), probs_of(logits)[..., 0], atol=ATOL)
    out = router(logits, training=False)
    assert float(to_numpy(out["dropped_fraction"])) == 0.0


def test_expert_choice_takes_each_experts_top_tokens():
    logits = [[[2.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.0, 3.0]]]
    router = logits_router(ExpertChoiceRouter, logits, top_k=1, capacity_factor=1.0)
    assert router.capacity() == 2
    dispatch, combine = dense(router, np.asarray(logits, "float32"))
    p = probs_of(logits)[0]
    by_expert = {e: [int(np.argmax(dispatch[0, :, e, c])) for c in range(2)] for e in range(2)}
    assert by_expert == {0: [0, 1], 1: [3, 2]}
    for e, tokens in by_expert.items():
        for c, s in enumerate(tokens):
            np.testing.assert_allclose(combine[0, s, e, c], p[s, e], atol=ATOL)
    # Every slot is filled with exactly one token.
    np.testing.assert_array_equal(dispatch.sum(axis=1), 1)


def test_expert_choice_token_may_be_taken_by_several_or_no_expert():
    logits = [[[3.0, 3.0, -1.0], [1.0, 1.0, 0.0], [-3.0, -3.0, -1.0], [0.0, 0.0, 0.0]]]
    router = logits_router(ExpertChoiceRouter, logits, top_k=1, capacity_factor=0.75)
    assert router.capacity() == 1
    dispatch, _ = dense(router, np.asarray(logits, "float32"))
    taken = dispatch[0].sum(axis=(1, 2))
    assert taken[0] == 2  # experts 0 and 1 both take token 0
    assert taken[1] == 0  # nobody takes token 1
    out = router(np.asarray(logits, "float32"), training=False)
    expected_dropped = 1.0 - np.mean(taken > 0)
    np.testing.assert_allclose(to_numpy(out["dropped_fraction"]), expected_dropped, atol=ATOL)


def test_soft_routing_normalisation():
    x = random_tokens((2, 8, 6), seed=4)
    router = SoftRouter(num_experts=3, slots_per_expert=2)
    dispatch, combine = dense(router, x)
    assert dispatch.shape == combine.shape == (2, 8, 3, 2)
    # Dispatch: a softmax over the tokens of a group, for every slot.
    np.testing.assert_allclose(dispatch.sum(axis=1), 1.0, atol=ATOL)
    # Combine: a softmax over all E * n slots, for every token.
    np.testing.assert_allclose(combine.sum(axis=(2, 3)), 1.0, atol=ATOL)
    assert dispatch.min() > 0 and combine.min() > 0


# ------------------------------------------------ random vs NumPy reference
TOKEN_CHOICE_CASES = [
    # top_k, capacity_factor, batch_priority, renormalize
    (1, 1.0, True, False),
    (1, 0.5, False, False),
    (2, 0.5, True, False),
    (2, 0.75, False, False),
    (2, 0.5, True, True),
    (3, None, True, False),
    (2, 1.25, True, True),
]


@pytest.mark.parametrize("top_k, capacity_factor, batch_priority, renormalize",
                         TOKEN_CHOICE_CASES)
def test_token_choice_matches_reference(top_k, capacity_factor, batch_priority, renormalize):
    x = random_tokens((2, 8, 6), seed=top_k)
    router = TokenChoiceRouter(num_experts=4, top_k=top_k, capacity_factor=capacity_factor,
                               batch_priority=batch_priority, renormalize_gates=renormalize)
    router.build((None, 8, 6))
    kernel = random_tokens((6, 4), seed=10 + top_k, scale=1.5)
    router.kernel.assign(kernel)
    dispatch, combine = dense(router, x)
    cap = router.capacity()
    assert cap == npref.capacity(8, 4, top_k, capacity_factor)
    ref = npref.token_choice(x, kernel, top_k, cap, batch_priority, renormalize)
    if capacity_factor is not None and capacity_factor < 1:
        assert not ref["kept"].all(), "case must exercise overflow"
    np.testing.assert_array_equal(dispatch, ref["dispatch"])
    np.testing.assert_allclose(combine, ref["combine"], atol=ATOL)
    out = router(x, training=False)
    np.testing.assert_allclose(to_numpy(out["router_probs"]), ref["probs"], atol=ATOL)
    np.testing.assert_allclose(
        to_numpy(out["dropped_fraction"]), 1.0 - ref["kept"].mean(), atol=ATOL
    )


def test_expert_choice_matches_reference():
    x = random_tokens((2, 8, 6), seed=7)
    router = ExpertChoiceRouter(num_experts=4, top_k=2, capacity_factor=0.75)
    router.build((None, 8, 6))
    kernel = random_tokens((6, 4), seed=8, scale=1.5)
    router.kernel.assign(kernel)
    dispatch, combine = dense(router, x)
    ref = npref.expert_choice(x, kernel, router.capacity())
    np.testing.assert_array_equal(dispatch, ref["dispatch"])
    np.testing.assert_allclose(combine, ref["combine"], atol=ATOL)


@pytest.mark.parametrize("normalize", [True, False])
def test_soft_matches_reference(normalize):
    x = random_tokens((2, 8, 6), seed=9)
    router = SoftRouter(num_experts=3, slots_per_expert=2, normalize=normalize)
    router.build((None, 8, 6))
    kernel = random_tokens((6, 6), seed=11)
    router.kernel.assign(kernel)
    scale = 1.0
    if normalize:
        scale = 2.5
        router.scale.assign(scale)
    dispatch, combine = dense(router, x)
    ref = npref.soft(x, kernel, scale, 3, 2, normalize)
    np.testing.assert_allclose(dispatch, ref["dispatch"], atol=ATOL)
    np.testing.assert_allclose(combine, ref["combine"], atol=ATOL)


# ---------------------------------------------------- full forward vs NumPy
FORWARD_CASES = {
    "top1": dict(router="token_choice", top_k=1, capacity_factor=1.0),
    "top2_overflow_bpr": dict(router="token_choice", top_k=2, capacity_factor=0.5),
    "top2_overflow_no_bpr": dict(router="token_choice", top_k=2, capacity_factor=0.5,
                                 batch_priority=False),
    "top2_renorm_dropless": dict(router="token_choice", top_k=2, capacity_factor=None,
                                 renormalize_gates=True),
    "gated_silu_no_bias": dict(router="token_choice", top_k=2, gated=True,
                               activation="silu", use_bias=False),
    "expert_choice": dict(router="expert_choice", top_k=2, capacity_factor=0.75),
    "soft": dict(router="soft", slots_per_expert=2),
    "group_size_smaller": dict(router="token_choice", top_k=2, group_size=4),
    "group_size_multiple": dict(router="expert_choice", top_k=1, group_size=16),
}


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_forward_matches_numpy_reference(case):
    kwargs = dict(num_experts=4, intermediate_dim=8)
    kwargs.update(FORWARD_CASES[case])
    moe = SparseMoE(**kwargs)
    x = random_tokens((2, 8, 6), seed=5)
    moe.build(x.shape)
    randomize_weights(moe, seed=len(case))
    y = to_numpy(moe(x, training=False))
    assert y.shape == x.shape
    expected = reference_forward(moe, x)
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=0)
    assert np.abs(y).max() > 0.1  # the comparison is not trivially 0 == 0
