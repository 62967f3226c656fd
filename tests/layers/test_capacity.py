"""Expert capacity: formula, clamping, static int, training vs inference."""

import math

import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers.routing_ops import compute_capacity
from tests.layers.moe_helpers import random_tokens


@pytest.mark.parametrize(
    "group_size, num_experts, top_k, factor, expected",
    [
        (65, 8, 2, 1.25, 21),  # ceil(20.3125)
        (16, 8, 2, 1.0, 4),  # exact
        (10, 4, 1, 1.0, 3),  # ceil(2.5)
        (100, 10, 1, 1.1, 11),  # 100 * 1.1 / 10 is 11.000000000000002 in floats
        (4, 64, 1, 0.1, 1),  # clamped below at 1
        (8, 2, 2, 4.0, 8),  # ceil(16) clamped above at the group size
        (8, 4, 2, None, 8),  # dropless: the group size
        (1, 4, 2, 1.25, 1),  # one token per group (rank-2 inputs)
    ],
)
def test_compute_capacity_formula(group_size, num_experts, top_k, factor, expected):
    capacity = compute_capacity(group_size, num_experts, top_k, factor)
    assert capacity == expected
    assert type(capacity) is int


def test_compute_capacity_matches_definition_on_a_grid():
    for s in (1, 3, 8, 33):
        for e in (1, 2, 5, 8):
            for k in range(1, e + 1):
                for cf in (0.25, 0.5, 1.0, 1.25, 2.0, 3.0):
                    exact = s * k * cf / e
                    expected = max(1, min(s, math.ceil(round(exact, 9))))
                    assert compute_capacity(s, e, k, cf) == expected, (s, e, k, cf)


@pytest.mark.parametrize("router", ["token_choice", "expert_choice"])
def test_eval_capacity_factor_used_at_inference_only(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, router=router,
                    capacity_factor=0.5, eval_capacity_factor=2.0, noise_std=0.0)
    x = random_tokens((2, 8, 6))
    moe(x)
    train_capacity = moe.capacity(training=True)
    eval_capacity = moe.capacity(training=False)
    assert (train_capacity, eval_capacity) == (2, 8)
    assert type(train_capacity) is int and type(eval_capacity) is int
    assert moe.routing_stats(x, training=True)["capacity"] == 2
    assert moe.routing_stats(x, training=False)["capacity"] == 8


def test_eval_capacity_defaults_to_training_capacity():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=0.5)
    moe(random_tokens((2, 8, 6)))
    assert moe.capacity(training=False) == moe.capacity(training=True) == 2


def test_dropless_eval_capacity_keeps_every_token_at_inference():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=0.25,
                    eval_capacity_factor=None, noise_std=0.0)
    x = random_tokens((2, 8, 6))
    moe(x)
    assert moe.routing_stats(x, training=False)["dropped_fraction"] > 0
    dropless = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=0.25,
                         eval_capacity_factor=4.0, noise_std=0.0)
    dropless(x)
    assert dropless.capacity(training=False) == 8
    assert dropless.routing_stats(x, training=False)["dropped_fraction"] == 0.0
    assert dropless.routing_stats(x, training=True)["dropped_fraction"] > 0


def test_capacity_before_build_raises():
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="group size"):
        moe.capacity()


def test_capacity_follows_group_size():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, capacity_factor=1.0,
                    group_size=16)
    moe(random_tokens((2, 8, 6)))
    assert moe.routing_group_size == 16
    assert moe.capacity() == 4
    assert np.isfinite(moe.routing_stats(random_tokens((2, 8, 6)))["load_imbalance"])
