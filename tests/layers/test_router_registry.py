"""The router extension point: a router defined and registered here is used
by name in SparseMoE (forward against NumPy, training, save/load), and the
registry's errors are clear."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import Router
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.layers import get_router_class
from keras_sparse_moe.layers import register_router
from keras_sparse_moe.layers import registered_routers
from keras_sparse_moe.layers.routing_ops import slots_from_assignments
from keras_sparse_moe.layers.routing_ops import token_choice_positions
from tests.layers import numpy_reference as npref
from tests.layers.moe_helpers import expert_weights
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import to_numpy


@register_router("test_tempered_top1")
class TemperedTop1Router(Router):
    """Top-1 of `softmax(x W / temperature)`, tokens served in group order;
    the gate is the top-1 probability. Only `route` is written: the base
    class supplies capacity, costs and a dense dispatcher."""

    def __init__(self, num_experts, temperature=1.0, **kwargs):
        kwargs["top_k"] = 1
        super().__init__(num_experts, **kwargs)
        if temperature <= 0:
            raise ValueError(f"Argument `temperature` must be > 0; received {temperature}.")
        self.temperature = float(temperature)

    def route(self, inputs, training=False, token_mask=None):
        group_size = self.static_group_size(inputs)
        logits = ops.matmul(ops.cast(inputs, "float32"), self.kernel) / self.temperature
        probs = ops.softmax(logits, axis=-1)
        expert_index = ops.expand_dims(ops.cast(ops.argmax(probs, axis=-1), "int32"), -1)
        gates = ops.max(probs, axis=-1, keepdims=True)
        capacity = self.capacity(training, group_size)
        position = token_choice_positions(expert_index, gates, self.num_experts, False)
        keep = position < capacity
        return {
            "expert_index": expert_index,
            "gates": ops.where(keep, gates, 0.0),
            "slot_token": slots_from_assignments(
                expert_index, position, keep, self.num_experts, capacity
            ),
            "router_probs": probs,
            "aux_losses": {},
            "aux_loss": ops.zeros((), "float32"),
            "dropped_fraction": 1.0 - ops.mean(ops.cast(keep, "float32")),
            "expert_fraction": ops.mean(ops.one_hot(expert_index[..., 0], self.num_experts),
                                        axis=(0, 1)),
        }

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


NUM_EXPERTS, DIM, TOKENS = 4, 6, 8


def _moe(**kwargs):
    return SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, router="test_tempered_top1",
                     temperature=0.5, capacity_factor=1.0, name="moe", **kwargs)


def _reference(moe, x):
    """NumPy forward of the test router + experts."""
    kernel = to_numpy(moe.router.kernel).astype("float64")
    weights = expert_weights(moe.experts)
    out = np.zeros(x.shape)
    capacity = npref.capacity(TOKENS, NUM_EXPERTS, 1, 1.0)
    for g in range(x.shape[0]):
        probs = npref.softmax(x[g] @ kernel / 0.5)
        filled = np.zeros(NUM_EXPERTS, int)
        for s in range(TOKENS):
            e = int(np.argmax(probs[s]))
            if filled[e] < capacity:
                filled[e] += 1
                y = npref.experts(x[g, s][None, None], {k: v[e:e + 1] for k, v in weights.items()})
                out[g, s] = probs[s, e] * y[0, 0]
    return out


def test_registered_router_by_name_matches_numpy():
    moe = _moe()
    x = random_tokens((3, TOKENS, DIM), seed=1)
    moe.build(x.shape)
    randomize_weights(moe, seed=2)
    assert isinstance(moe.router, TemperedTop1Router)
    assert moe.router.temperature == 0.5
    assert moe.router_type == "test_tempered_top1"
    np.testing.assert_allclose(to_numpy(moe(x)), _reference(moe, x.astype("float64")),
                               atol=1e-5)
    assert "test_tempered_top1" in registered_routers()
    assert get_router_class("test_tempered_top1") is TemperedTop1Router


def test_registered_router_trains_and_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((TOKENS, DIM))
    moe = _moe()
    model = keras.Model(inputs, moe(inputs))
    randomize_weights(moe, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = random_tokens((4, TOKENS, DIM), seed=4), random_tokens((4, TOKENS, DIM), seed=5)
    before = [to_numpy(v) for v in (moe.router.kernel, moe.experts.kernel_in)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, (moe.router.kernel, moe.experts.kernel_in)):
        assert np.abs(to_numpy(new) - old).max() > 0  # gradients reached both

    config = moe.get_config()
    assert config["router"] == "test_tempered_top1" and config["temperature"] == 0.5
    assert "noise_std" not in config  # another router's option
    path = os.path.join(tmp_path, "custom_router.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.get_layer("moe")
    assert isinstance(restored.router, TemperedTop1Router)
    assert restored.get_config() == config
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_router_instance_and_serialized_dict():
    router = TokenChoiceRouter(num_experts=NUM_EXPERTS, top_k=1, capacity_factor=2.0,
                               noise_std=0.0, name="router")
    by_instance = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, router=router)
    assert by_instance.router is router
    assert (by_instance.top_k, by_instance.capacity_factor) == (1, 2.0)
    # Its config names the router and its options, like the flat form.
    config = by_instance.get_config()
    flat = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, top_k=1,
                     capacity_factor=2.0, noise_std=0.0, router_initializer="glorot_uniform")
    assert config == {**flat.get_config(), "name": config["name"]}
    by_dict = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8,
                        router=keras.saving.serialize_keras_object(router))
    assert by_dict.router.get_config() == router.get_config()


def test_registry_errors():
    with pytest.raises(ValueError, match="token_choice") as info:
        get_router_class("token_choise")
    assert "Did you mean 'token_choice'" in str(info.value)
    with pytest.raises(ValueError, match="already registered"):
        register_router("token_choice", TemperedTop1Router)
    with pytest.raises(ValueError, match="subclass"):
        register_router("not_a_router", dict)
    class Unregistered(TokenChoiceRouter):
        pass

    with pytest.raises(ValueError, match="register_router"):  # not saved as its parent
        SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8,
                  router=Unregistered(num_experts=NUM_EXPERTS))
    with pytest.raises(ValueError, match="num_experts"):
        SparseMoE(num_experts=8, intermediate_dim=8,
                  router=TokenChoiceRouter(num_experts=NUM_EXPERTS))
    with pytest.raises(ValueError, match="noise_std"):
        SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, noise_std=0.0,
                  router=TokenChoiceRouter(num_experts=NUM_EXPERTS))
    with pytest.raises(ValueError, match="temperature"):
        SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, router="test_tempered_top1",
                  temperature=0.0)
