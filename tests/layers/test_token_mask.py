"""`token_mask` (padding is never routed) and per-call group sizes."""

import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import to_numpy

ROUTERS = {
    "token_choice_top2": dict(router="token_choice", top_k=2, capacity_factor=0.75),
    "token_choice_no_bpr": dict(router="token_choice", top_k=2, capacity_factor=0.75,
                                batch_priority=False),
    "expert_choice": dict(router="expert_choice", top_k=2, capacity_factor=1.0),
    "soft": dict(router="soft", slots_per_expert=2),
}


def _mask():
    mask = np.ones((2, 8), bool)
    mask[0, 5:] = False  # example 0: 5 real tokens, 3 padding
    mask[1, ::3] = False  # example 1: padding in between
    return mask


@pytest.mark.parametrize("case", sorted(ROUTERS))
def test_padding_is_not_routed(case):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, **ROUTERS[case])
    x = random_tokens((2, 8, 6), seed=1)
    moe.build(x.shape)
    randomize_weights(moe, seed=2)
    mask = _mask()
    y = to_numpy(moe(x, token_mask=mask))
    np.testing.assert_array_equal(y[~mask], 0.0)
    # Real tokens are routed as if the padding were not there (the capacity
    # is still that of the full group).
    np.testing.assert_allclose(y, reference_forward(moe, x, token_mask=mask), atol=1e-5)
    # So padding values cannot change them.
    x_other = x.copy()
    x_other[~mask] = 50.0 * random_tokens(x[~mask].shape, seed=3)
    y_other = to_numpy(moe(x_other, token_mask=mask))
    np.testing.assert_allclose(y_other, y, atol=1e-5)


def test_token_mask_shape_is_checked():
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="token_mask"):
        moe(random_tokens((2, 8, 6)), token_mask=np.ones((2, 7), bool))


@pytest.mark.parametrize("router", ["token_choice", "expert_choice"])
def test_each_call_routes_with_its_own_token_count(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, top_k=2,
                    capacity_factor=0.75)
    x8 = random_tokens((2, 8, 6), seed=4)
    moe.build(x8.shape)
    randomize_weights(moe, seed=5)
    x4 = random_tokens((2, 4, 6), seed=6)
    assert moe.capacity(group_size=4) == 2 and moe.capacity() == 3
    np.testing.assert_allclose(to_numpy(moe(x4)), reference_forward(moe, x4), atol=1e-5)
    np.testing.assert_allclose(to_numpy(moe(x8)), reference_forward(moe, x8), atol=1e-5)
