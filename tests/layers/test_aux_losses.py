"""Auxiliary routing losses: formulas, weights, training-only."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.layers import aux_losses
from tests.layers import numpy_reference as npref
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import to_numpy

ZERO = dict(importance_loss_weight=0.0, load_loss_weight=0.0,
            load_balancing_loss_weight=0.0, z_loss_weight=0.0)


def _skewed_probs(seed=0):
    logits = random_tokens((3, 7, 4), seed=seed, scale=2.0)
    logits[..., 0] += 1.0  # unbalanced on purpose
    return logits, npref.softmax(logits).astype("float32")


# ------------------------------------------------------------ pure functions
def test_importance_loss_formula():
    _, probs = _skewed_probs()
    got = float(to_numpy(aux_losses.importance_loss(probs)))
    np.testing.assert_allclose(got, npref.importance_loss(probs), rtol=1e-5)
    assert got > 0.01
    uniform = np.full((2, 5, 4), 0.25, "float32")
    assert float(to_numpy(aux_losses.importance_loss(uniform))) == pytest.approx(0.0, abs=1e-7)


def test_load_balancing_loss_formula():
    _, probs = _skewed_probs(1)
    index = np.argsort(-probs, axis=-1)[..., :2].astype("int32")
    got = float(to_numpy(aux_losses.load_balancing_loss(probs, index, 4)))
    np.testing.assert_allclose(got, npref.load_balancing_loss(probs, index, 4), rtol=1e-5)
    # Perfect balance gives exactly 1.
    uniform = np.full((1, 4, 4), 0.25, "float32")
    balanced_index = np.arange(4, dtype="int32").reshape(1, 4, 1)
    value = float(to_numpy(aux_losses.load_balancing_loss(uniform, balanced_index, 4)))
    assert value == pytest.approx(1.0, abs=1e-6)


def test_router_z_loss_formula():
    logits, _ = _skewed_probs(2)
    got = float(to_numpy(aux_losses.router_z_loss(logits)))
    np.testing.assert_allclose(got, npref.router_z_loss(logits), rtol=1e-5)


def test_load_loss_formula():
    logits, _ = _skewed_probs(3)
    noisy = logits + 0.3 * random_tokens(logits.shape, seed=9)
    got = float(to_numpy(aux_losses.load_loss(logits, noisy, 0.3, 2)))
    np.testing.assert_allclose(got, npref.load_loss(logits, noisy, 0.3, 2), rtol=1e-4)


# -------------------------------------------------------------------- router
def test_router_reports_unweighted_losses_and_weighted_total():
    x = random_tokens((2, 8, 6))
    router = TokenChoiceRouter(num_experts=4, top_k=2, noise_std=0.0,
                               importance_loss_weight=0.3, load_balancing_loss_weight=0.7,
                               z_loss_weight=0.11)
    out = router(x, training=True)
    kernel = to_numpy(router.kernel)
    ref = npref.token_choice(x, kernel, 2, router.capacity(True))
    expected = {
        "importance_loss": npref.importance_loss(ref["probs"]),
        "load_balancing_loss": npref.load_balancing_loss(ref["probs"], ref["expert_index"], 4),
        "router_z_loss": npref.router_z_loss(ref["logits"]),
    }
    got = {k: float(to_numpy(v)) for k, v in out["aux_losses"].items()}
    assert set(got) == set(expected)  # no load loss without noise
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, err_msg=name)
    total = 0.3 * expected["importance_loss"] + 0.7 * expected["load_balancing_loss"] \
        + 0.11 * expected["router_z_loss"]
    np.testing.assert_allclose(float(to_numpy(out["aux_loss"])), total, rtol=1e-4)


@pytest.mark.parametrize("load_loss_weight", [0.0, 0.4])
def test_load_loss_weight_with_noise(load_loss_weight):
    router = TokenChoiceRouter(num_experts=4, top_k=2, noise_std=1.0, seed=3,
                               **{**ZERO, "importance_loss_weight": 0.2,
                                  "load_loss_weight": load_loss_weight})
    out = router(random_tokens((2, 8, 6)), training=True)
    losses = {k: float(to_numpy(v)) for k, v in out["aux_losses"].items()}
    assert losses["load_loss"] > 0
    expected = 0.2 * losses["importance_loss"] + load_loss_weight * losses["load_loss"]
    np.testing.assert_allclose(float(to_numpy(out["aux_loss"])), expected, rtol=1e-5)


# --------------------------------------------------------------------- layer
def _layer_loss(moe, x, training):
    moe(x, training=training)
    return [float(to_numpy(v)) for v in moe.losses]


@pytest.mark.parametrize("router", ["token_choice", "expert_choice", "soft"])
def test_losses_only_in_training(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, z_loss_weight=0.01)
    x = random_tokens((2, 8, 6))
    assert len(_layer_loss(moe, x, training=True)) == 1
    assert _layer_loss(moe, x, training=True)[0] > 0
    assert _layer_loss(moe, x, training=False) == []
    assert _layer_loss(moe, x, training=None) == []


WEIGHTS = ["importance_loss_weight", "load_balancing_loss_weight", "z_loss_weight"]


@pytest.mark.parametrize("weight_name", WEIGHTS)
def test_each_weight_scales_its_own_loss(weight_name):
    x = random_tokens((2, 8, 6), seed=4)
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, noise_std=0.0,
                    **{**ZERO, weight_name: 2.5})
    moe.build(x.shape)
    randomize_weights(moe, seed=2)
    ref = npref.token_choice(x, to_numpy(moe.router.kernel), 2, moe.capacity(True))
    value = {
        "importance_loss_weight": npref.importance_loss(ref["probs"]),
        "load_balancing_loss_weight": npref.load_balancing_loss(
            ref["probs"], ref["expert_index"], 4),
        "z_loss_weight": npref.router_z_loss(ref["logits"]),
    }[weight_name]
    (loss,) = _layer_loss(moe, x, training=True)
    np.testing.assert_allclose(loss, 2.5 * value, rtol=1e-4)


@pytest.mark.parametrize("router", ["token_choice", "expert_choice", "soft"])
def test_zero_weights_add_nothing(router):
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, noise_std=1.0, **ZERO)
    assert sum(_layer_loss(moe, random_tokens((2, 8, 6)), training=True)) == 0.0


@pytest.mark.parametrize("router", ["expert_choice", "soft"])
def test_z_loss_of_expert_choice_and_soft(router):
    x = random_tokens((2, 8, 6), seed=6)
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router=router, z_loss_weight=0.5)
    moe.build(x.shape)
    randomize_weights(moe, seed=3)
    kernel = to_numpy(moe.router.kernel)
    if router == "soft":
        logits = npref.soft(x, kernel, float(to_numpy(moe.router.scale)), 4, 1)["logits"]
    else:
        logits = npref.expert_choice(x, kernel, moe.capacity(True))["logits"]
    (loss,) = _layer_loss(moe, x, training=True)
    np.testing.assert_allclose(loss, 0.5 * npref.router_z_loss(logits), rtol=1e-4)


def test_model_losses_in_fit_but_not_in_evaluate():
    x = random_tokens((2, 8, 6), seed=7)
    y = random_tokens((2, 8, 6), seed=8)
    inputs = keras.Input((8, 6))
    moe = SparseMoE(num_experts=4, intermediate_dim=8, noise_std=0.0,
                    **{**ZERO, "importance_loss_weight": 3.0})
    model = keras.Model(inputs, moe(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    randomize_weights(moe, seed=5)
    prediction = model.predict(x, verbose=0)
    mse = float(np.mean((prediction - y) ** 2))
    eval_loss = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(eval_loss, mse, rtol=1e-5)
    groups = x.reshape(-1, 8, 6)
    probs = npref.token_choice(groups, to_numpy(moe.router.kernel), 2, moe.capacity(True))["probs"]
    aux = 3.0 * npref.importance_loss(probs)
    assert aux > 1e-3
    train_loss = model.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(train_loss, mse + aux, rtol=1e-4)
