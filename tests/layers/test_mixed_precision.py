"""Mixed precision: low-precision experts, float32 router."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import to_numpy

POLICIES = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
ROUTERS = ["token_choice", "expert_choice", "soft"]


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_mixed_precision_forward(policy, router):
    keras.config.set_dtype_policy(policy)
    compute = POLICIES[policy]
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, top_k=2)
    x = random_tokens((2, 8, 6))
    moe.build(x.shape)
    randomize_weights(moe, seed=1, scale=0.3)
    assert moe.compute_dtype == compute
    assert moe.router.compute_dtype == "float32"
    for v in moe.weights:
        assert keras.backend.standardize_dtype(v.dtype) == "float32", v.path

    y = moe(keras.ops.cast(x, compute), training=False)
    assert keras.backend.standardize_dtype(y.dtype) == compute
    y = to_numpy(y)
    assert np.all(np.isfinite(y))
    # Close to the float32 NumPy reference (low-precision experts only).
    np.testing.assert_allclose(y, reference_forward(moe, x), atol=0.1)

    groups = keras.ops.cast(x.reshape(-1, 8, 6), compute)
    routing = moe.router(groups, training=False)
    assert keras.backend.standardize_dtype(routing["router_probs"].dtype) == "float32"
    assert keras.backend.standardize_dtype(routing["combine_weights"].dtype) == "float32"
    assert moe.routing_stats(x)["router_probs"].dtype == np.float32

    y_train = moe(x, training=True)
    assert keras.backend.standardize_dtype(y_train.dtype) == compute
    assert all(np.isfinite(float(to_numpy(loss))) for loss in moe.losses)


def test_mixed_precision_fit_step():
    keras.config.set_dtype_policy("mixed_bfloat16")
    inputs = keras.Input((8, 6))
    moe = SparseMoE(num_experts=4, intermediate_dim=8)
    outputs = keras.layers.Activation("linear", dtype="float32")(moe(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    before = to_numpy(moe.router.kernel)
    history = model.fit(random_tokens((2, 8, 6)), random_tokens((2, 8, 6), seed=1),
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.any(to_numpy(moe.router.kernel) != before)
    assert keras.backend.standardize_dtype(moe.router.kernel.dtype) == "float32"
