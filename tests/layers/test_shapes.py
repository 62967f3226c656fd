"""Dynamic batch size, XLA compilation, rank-2 inputs and routing groups."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import to_numpy

ROUTERS = {
    "token_choice": dict(router="token_choice", top_k=2, capacity_factor=0.75),
    "expert_choice": dict(router="expert_choice", top_k=2),
    "soft": dict(router="soft", slots_per_expert=2),
}


def _model(router, tokens=8, dim=6, **overrides):
    inputs = keras.Input((tokens, dim) if tokens else (dim,))
    moe = SparseMoE(num_experts=4, intermediate_dim=8, name="moe",
                    **{**ROUTERS[router], **overrides})
    model = keras.Model(inputs, moe(inputs))
    randomize_weights(moe, seed=1)
    return model, moe


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_functional_model_with_dynamic_batch(router):
    model, moe = _model(router)
    assert tuple(model.output.shape) == (None, 8, 6)
    x = random_tokens((5, 8, 6))
    y5 = model.predict(x, batch_size=5, verbose=0)
    y1 = model.predict(x[:1], batch_size=1, verbose=0)
    assert y5.shape == (5, 8, 6) and y1.shape == (1, 8, 6)
    # Groups are examples: an example's output does not depend on the batch.
    np.testing.assert_allclose(y1[0], y5[0], atol=1e-6)
    np.testing.assert_allclose(y5, reference_forward(moe, x), atol=1e-5)


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_jit_compiled_fit_and_predict(router):
    if keras.backend.backend() == "torch":
        pytest.skip("jit_compile is not used for the torch backend")
    model, moe = _model(router)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=True)
    x = random_tokens((5, 8, 6), seed=2)
    expected = reference_forward(moe, x)
    y5 = model.predict(x, batch_size=5, verbose=0)
    y1 = model.predict(x[:1], batch_size=1, verbose=0)
    np.testing.assert_allclose(y5, expected, atol=1e-5)
    np.testing.assert_allclose(y1, expected[:1], atol=1e-5)
    history = model.fit(x[:4], random_tokens((4, 8, 6), seed=3), batch_size=2, epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("router", ["token_choice", "expert_choice"])
def test_rank_2_inputs(router):
    model, moe = _model(router, tokens=None)
    assert tuple(model.output.shape) == (None, 6)
    assert moe.routing_group_size == 1
    x = random_tokens((5, 6), seed=4)
    y = model.predict(x, verbose=0)
    assert y.shape == (5, 6)
    np.testing.assert_allclose(model.predict(x[:1], verbose=0), y[:1], atol=1e-6)
    np.testing.assert_allclose(y, reference_forward(moe, x), atol=1e-5)


def test_rank_2_inputs_grouped():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, capacity_factor=1.0,
                    group_size=4)
    x = random_tokens((8, 6), seed=5)
    moe.build(x.shape)
    randomize_weights(moe)
    assert moe.routing_group_size == 4 and moe.capacity() == 1
    y = to_numpy(moe(x))
    assert y.shape == (8, 6)
    np.testing.assert_allclose(y, reference_forward(moe, x), atol=1e-5)


@pytest.mark.parametrize("group_size, groups", [(2, 8), (16, 1)])
def test_group_size_divides_or_multiplies_tokens(group_size, groups):
    # The outputs for both cases are checked against NumPy in
    # test_routing_semantics.py; here: the grouping itself.
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, group_size=group_size)
    x = random_tokens((2, 8, 6), seed=6)
    stats = moe.routing_stats(x)
    assert moe.routing_group_size == group_size
    assert stats["router_probs"].shape == (groups, group_size, 4)
    assert stats["capacity"] == moe.capacity() == max(1, -(-group_size * 5 // 16))
