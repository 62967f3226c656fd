"""`SparseMoE.routing_stats` and the statistics variables updated in training."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from tests.layers import numpy_reference as npref
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import to_numpy

ROUTERS = {
    "token_choice": dict(router="token_choice", top_k=2, capacity_factor=0.5),
    "expert_choice": dict(router="expert_choice", top_k=1, capacity_factor=0.5),
    "soft": dict(router="soft", slots_per_expert=2),
}


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_routing_stats_are_sane(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, **ROUTERS[router])
    x = random_tokens((2, 8, 6))
    stats = moe.routing_stats(x)
    assert {"dropped_fraction", "expert_fraction", "load_imbalance", "capacity",
            "router_probs", "aux_losses"} <= set(stats)
    fraction = stats["expert_fraction"]
    assert fraction.shape == (4,)
    assert np.all(fraction >= 0)
    np.testing.assert_allclose(fraction.sum(), 1.0, atol=1e-5)
    assert 0.0 <= stats["dropped_fraction"] <= 1.0
    np.testing.assert_allclose(stats["load_imbalance"], 4 * fraction.max(), rtol=1e-6)
    assert stats["load_imbalance"] >= 1.0 - 1e-6
    assert type(stats["capacity"]) is int
    assert stats["router_probs"].shape == (2, 8, 4)
    np.testing.assert_allclose(stats["router_probs"].sum(-1), 1.0, atol=1e-5)
    assert all(np.isfinite(v) for v in stats["aux_losses"].values())


def test_token_choice_stats_match_reference():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=0.5)
    x = random_tokens((2, 8, 6), seed=1)
    moe.build(x.shape)
    randomize_weights(moe, seed=2, scale=1.0)
    stats = moe.routing_stats(x)
    ref = npref.token_choice(x, to_numpy(moe.router.kernel), 2, moe.capacity())
    np.testing.assert_array_equal(stats["expert_index"], ref["expert_index"])
    expected_dropped = 1.0 - ref["kept"].mean()
    assert expected_dropped > 0
    np.testing.assert_allclose(stats["dropped_fraction"], expected_dropped, atol=1e-6)
    counts = np.bincount(ref["expert_index"].reshape(-1), minlength=4)
    np.testing.assert_allclose(stats["expert_fraction"], counts / counts.sum(), atol=1e-6)
    # Gates of dropped assignments are zero.
    np.testing.assert_allclose(stats["gates"], np.where(ref["kept"], ref["gates"], 0.0),
                               atol=1e-6)


def test_expert_choice_dropped_fraction_counts_untaken_tokens():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router="expert_choice", top_k=1,
                    capacity_factor=0.5)
    x = random_tokens((2, 8, 6), seed=3)
    stats = moe.routing_stats(x)
    ref = npref.expert_choice(x, to_numpy(moe.router.kernel), moe.capacity())
    untaken = ref["dispatch"].sum(axis=(2, 3)) == 0
    np.testing.assert_allclose(stats["dropped_fraction"], untaken.mean(), atol=1e-6)
    assert stats["dropped_fraction"] >= 0.5  # 8 slots for 8 tokens at most


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_stats_variables_updated_by_fit_not_by_predict(router):
    inputs = keras.Input((8, 6))
    moe = SparseMoE(num_experts=4, intermediate_dim=8, noise_std=0.0, **ROUTERS[router])
    model = keras.Model(inputs, moe(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    stats_vars = {moe.stat_dropped_fraction.path, moe.stat_expert_fraction.path}
    assert stats_vars <= {v.path for v in model.non_trainable_variables}
    x = random_tokens((2, 8, 6), seed=4)
    model.predict(x, verbose=0)
    assert float(to_numpy(moe.stat_dropped_fraction)) == 0.0
    np.testing.assert_array_equal(to_numpy(moe.stat_expert_fraction), 0.0)
    model.fit(x, random_tokens((2, 8, 6), seed=5), batch_size=2, epochs=1, verbose=0)
    expected = moe.routing_stats(x, training=True)
    fraction = to_numpy(moe.stat_expert_fraction)
    np.testing.assert_allclose(fraction.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(fraction, expected["expert_fraction"], atol=1e-6)
    np.testing.assert_allclose(float(to_numpy(moe.stat_dropped_fraction)),
                               expected["dropped_fraction"], atol=1e-6)
    if router != "soft":
        assert float(to_numpy(moe.stat_dropped_fraction)) > 0
