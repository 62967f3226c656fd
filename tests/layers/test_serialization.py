"""get_config / from_config and `.keras` save/load round trips."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import to_numpy

CONFIGS = {
    "token_choice": dict(router="token_choice", top_k=1, capacity_factor=None,
                         eval_capacity_factor=2.0, noise_std=0.5, jitter=0.1,
                         renormalize_gates=True, batch_priority=False,
                         importance_loss_weight=0.1, load_loss_weight=0.2,
                         load_balancing_loss_weight=0.3, z_loss_weight=0.4, seed=7),
    "expert_choice": dict(router="expert_choice", top_k=2, capacity_factor=0.75,
                          group_size=4, z_loss_weight=0.01,
                          router_initializer="zeros"),
    "soft": dict(router="soft", slots_per_expert=3, activation="relu", use_bias=False),
    "gated": dict(router="token_choice", gated=True, activation="silu", dropout=0.1,
                  kernel_initializer="he_normal"),
}


def _moe(name):
    return SparseMoE(num_experts=4, intermediate_dim=8, name="moe", **CONFIGS[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_get_config_round_trip(name):
    moe = _moe(name)
    config = moe.get_config()
    for key, value in CONFIGS[name].items():
        if key.endswith("initializer"):
            continue
        assert config[key] == value, key
    clone = SparseMoE.from_config(config)
    assert clone.get_config() == config
    assert clone.router_type == moe.router_type
    assert type(clone.router) is type(moe.router)
    assert clone.router.get_config() == moe.router.get_config()
    assert clone.experts.get_config() == moe.experts.get_config()
    x = random_tokens((2, 8, 6))
    moe.build(x.shape)
    clone.build(x.shape)
    randomize_weights(moe)
    clone.set_weights(moe.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x)), to_numpy(moe(x)))


@pytest.mark.parametrize(
    "layer",
    [
        TokenChoiceRouter(num_experts=3, top_k=2, capacity_factor=0.5, noise_std=0.0,
                          renormalize_gates=True, batch_priority=False, seed=1),
        ExpertChoiceRouter(num_experts=3, top_k=2, capacity_factor=1.5,
                           eval_capacity_factor=0.5, z_loss_weight=0.1),
        SoftRouter(num_experts=3, slots_per_expert=2, normalize=False),
        Experts(num_experts=3, intermediate_dim=4, activation="silu", gated=True,
                use_bias=False, dropout=0.2),
    ],
    ids=["token_choice_router", "expert_choice_router", "soft_router", "gated_experts"],
)
def test_sublayer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


def test_router_and_experts_registered_under_package():
    for cls in (SparseMoE, TokenChoiceRouter, ExpertChoiceRouter, SoftRouter, Experts):
        name = keras.saving.get_registered_name(cls)
        assert name == f"keras_sparse_moe>{cls.__name__}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_keras_file_round_trip(name, tmp_path):
    inputs = keras.Input((8, 6))
    moe = _moe(name)
    model = keras.Model(inputs, moe(inputs))
    randomize_weights(moe, seed=3)
    x = random_tokens((2, 8, 6), seed=1)
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "moe.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.get_layer("moe")
    assert isinstance(restored, SparseMoE)
    assert restored.get_config() == moe.get_config()
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
