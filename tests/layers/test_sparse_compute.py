"""Sparse compute, checked structurally (no timing): the experts only see
`E * C ~ S * k * capacity_factor` token slots per group, not `E * S`."""

import math

import pytest

from keras_sparse_moe.layers import SparseMoE
from tests.layers.moe_helpers import random_tokens


def spy_on_experts(moe):
    """Record the shape of every tensor the Experts sublayer receives."""
    shapes = []
    call = moe.experts.call

    def spy(inputs, training=None):
        shapes.append(tuple(int(d) for d in inputs.shape))
        return call(inputs, training=training)

    moe.experts.call = spy
    return shapes


@pytest.mark.parametrize(
    "router, top_k, factor",
    [("token_choice", 1, 1.0), ("token_choice", 2, 1.25), ("expert_choice", 2, 1.0)],
)
def test_experts_receive_capacity_slots_not_all_tokens(router, top_k, factor):
    num_experts, tokens, batch, dim = 8, 16, 2, 6
    moe = SparseMoE(num_experts=num_experts, intermediate_dim=8, top_k=top_k,
                    router=router, capacity_factor=factor)
    x = random_tokens((batch, tokens, dim))
    moe.build(x.shape)
    shapes = spy_on_experts(moe)
    moe(x, training=False)
    capacity = math.ceil(tokens * top_k * factor / num_experts)
    assert moe.capacity() == capacity
    assert shapes == [(num_experts, batch * capacity, dim)]
    slots_per_group = num_experts * capacity
    assert slots_per_group <= math.ceil(tokens * top_k * factor) + num_experts
    assert slots_per_group < num_experts * tokens


def test_expert_work_does_not_grow_with_num_experts():
    rows = {}
    x = random_tokens((2, 16, 6))
    for num_experts in (2, 8):
        moe = SparseMoE(num_experts=num_experts, intermediate_dim=8, top_k=2,
                        capacity_factor=1.0)
        moe.build(x.shape)
        shapes = spy_on_experts(moe)
        moe(x)
        e, n, _ = shapes[0]
        rows[num_experts] = e * n  # token slots processed by all experts together
    assert rows == {2: 2 * 16 * 2, 8: 2 * 16 * 2}


def test_training_and_inference_capacity_reach_the_experts():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=0.5,
                    eval_capacity_factor=1.0, noise_std=0.0)
    x = random_tokens((2, 8, 6))
    moe.build(x.shape)
    shapes = spy_on_experts(moe)
    moe(x, training=True)
    moe(x, training=False)
    assert shapes == [(4, 2 * 2, 6), (4, 2 * 4, 6)]


def test_soft_router_experts_see_slots_per_expert():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router="soft", slots_per_expert=3)
    x = random_tokens((2, 8, 6))
    moe.build(x.shape)
    shapes = spy_on_experts(moe)
    moe(x)
    assert shapes == [(4, 2 * 3, 6)]
