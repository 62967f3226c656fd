import keras
import numpy as np

import keras_sparse_moe as ksm
from keras_sparse_moe.callbacks import RoutingStatistics
from keras_sparse_moe.callbacks import moe_layers


def _model():
    inputs = keras.Input((8, 16))
    h = ksm.SparseMoE(4, 32, name="moe_a")(inputs)
    h = ksm.SparseMoE(4, 32, name="moe_b", capacity_factor=0.5)(h)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_routing_statistics_are_logged_during_fit():
    model = _model()
    assert [layer.name for layer in moe_layers(model)] == ["moe_a", "moe_b"]
    x = np.random.default_rng(0).random((24, 8, 16), dtype=np.float32)
    y = np.arange(24) % 3
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[RoutingStatistics()])
    logs = history.history
    for key in ("moe_a/dropped_fraction", "moe_b/load_imbalance", "moe/dropped_fraction"):
        assert len(logs[key]) == 2
    # capacity_factor=0.5 with top-2 must drop a share of the assignments.
    assert all(0.0 < d <= 1.0 for d in logs["moe_b/dropped_fraction"])
    assert all(1.0 <= i <= 4.0 for i in logs["moe_a/load_imbalance"])
