"""Bad arguments and inputs give clear ValueErrors; NaN inputs stay NaN."""

import re

import numpy as np
import pytest

from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import to_numpy


@pytest.mark.parametrize(
    "kwargs, argument, value",
    [
        (dict(num_experts=0), "num_experts", "0"),
        (dict(num_experts=2.5), "num_experts", "2.5"),
        (dict(intermediate_dim=0), "intermediate_dim", "0"),
        (dict(top_k=0), "top_k", "0"),
        (dict(top_k=5), "top_k", "5"),
        (dict(capacity_factor=0.0), "capacity_factor", "0.0"),
        (dict(capacity_factor=-1.0), "capacity_factor", "-1.0"),
        (dict(capacity_factor="big"), "capacity_factor", "big"),
        (dict(eval_capacity_factor=0), "eval_capacity_factor", "0"),
        (dict(group_size=0), "group_size", "0"),
        (dict(router="soft", slots_per_expert=0), "slots_per_expert", "0"),
        (dict(noise_std=-1.0), "noise_std", "-1.0"),
        (dict(jitter=1.0), "jitter", "1.0"),
        (dict(dropout=1.0), "dropout", "1.0"),
        (dict(importance_loss_weight=-0.1), "importance_loss_weight", "-0.1"),
        (dict(load_loss_weight=-0.1), "load_loss_weight", "-0.1"),
        (dict(load_balancing_loss_weight=-0.1), "load_balancing_loss_weight", "-0.1"),
        (dict(z_loss_weight=-0.1), "z_loss_weight", "-0.1"),
        (dict(router="expert_choice", capacity_factor=None), "capacity_factor", "None"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, argument, value):
    full = dict(num_experts=4, intermediate_dim=8)
    full.update(kwargs)
    with pytest.raises(ValueError) as info:
        SparseMoE(**full)
    message = str(info.value)
    assert f"`{argument}`" in message
    assert value in message


def test_unknown_router_lists_valid_routers():
    with pytest.raises(ValueError, match="router") as info:
        SparseMoE(num_experts=4, intermediate_dim=8, router="token_choise")
    message = str(info.value)
    for name in ("token_choice", "expert_choice", "soft"):
        assert name in message
    assert "token_choise" in message


@pytest.mark.parametrize(
    "cls, kwargs, argument",
    [
        (TokenChoiceRouter, dict(num_experts=0), "num_experts"),
        (TokenChoiceRouter, dict(num_experts=2, top_k=3), "top_k"),
        (TokenChoiceRouter, dict(num_experts=2, capacity_factor=-2), "capacity_factor"),
        (ExpertChoiceRouter, dict(num_experts=2, top_k=0), "top_k"),
        (SoftRouter, dict(num_experts=2, slots_per_expert=0), "slots_per_expert"),
    ],
)
def test_routers_validate_arguments(cls, kwargs, argument):
    with pytest.raises(ValueError, match=re.escape(f"`{argument}`")):
        cls(**kwargs)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4, 6)])
def test_input_rank_must_be_2_or_3(shape):
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="rank"):
        moe(np.zeros(shape, "float32"))


def test_rank_change_after_build_is_rejected():
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    moe.build((2, 4, 6))
    with pytest.raises(ValueError, match="rank"):
        moe(random_tokens((2, 6)))


def test_tokens_not_divisible_into_groups():
    # 3 x 6 = 18 tokens do not make groups of 4 (2 x 6 = 12 would: groups
    # straddle examples as in vmoe, tests/layers/test_routing_groups.py).
    moe = SparseMoE(num_experts=4, intermediate_dim=8, group_size=4)
    with pytest.raises(ValueError, match="group_size=4") as info:
        moe(random_tokens((3, 6, 6)))
    assert "batch=3" in str(info.value) and "multiple of 2" in str(info.value)


def test_batch_not_divisible_into_groups():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, group_size=8)
    moe.build((2, 4, 6))
    with pytest.raises(ValueError, match="group_size"):
        moe(random_tokens((3, 4, 6)))


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_non_floating_input_rejected(dtype):
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="floating"):
        moe(np.ones((2, 4, 6), dtype))


@pytest.mark.parametrize("router", ["token_choice", "expert_choice", "soft"])
def test_nan_token_gives_nan_output(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, capacity_factor=0.5
                    if router == "token_choice" else 1.0)
    x = random_tokens((2, 8, 6), seed=1)
    clean = to_numpy(moe(x))
    x[0, 3, 2] = np.nan
    y = to_numpy(moe(x))
    assert np.all(np.isnan(y[0, 3]))
    # Routing groups are independent: the other example is untouched.
    np.testing.assert_allclose(y[1], clean[1], atol=1e-6)


def test_nan_in_a_dropped_token_is_still_nan():
    # With a tiny capacity most assignments are dropped; a dropped NaN token
    # must not come out as a plausible value (zero).
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, capacity_factor=0.25)
    x = random_tokens((2, 8, 6), seed=2)
    x[..., 2] = np.nan
    y = to_numpy(moe(x))
    assert np.all(np.isnan(y))
