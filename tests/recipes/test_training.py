import csv
import os

import keras
import numpy as np
import pytest

import keras_sparse_moe as ksm
from keras_sparse_moe.recipes import SparseCategoricalCrossentropyWithSmoothing
from keras_sparse_moe.recipes import make_callbacks
from keras_sparse_moe.recipes import make_optimizer
from keras_sparse_moe.recipes import make_schedule
from tests.recipes.interrupt import InterruptAfter


def _model():
    inputs = keras.Input((8, 16))
    h = ksm.SparseMoE(4, 32)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(
        make_optimizer(1e-2, total_steps=40),
        SparseCategoricalCrossentropyWithSmoothing(0.1),
        metrics=["accuracy"],
    )
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 16), dtype=np.float32)
    return x, (x[:, :, 0].mean(-1) > 0.5).astype("int32")


def test_schedule_warms_up_then_decays():
    lr = make_schedule(1e-3, total_steps=100, warmup_steps=10)
    values = [float(keras.ops.convert_to_numpy(lr(step))) for step in (0, 10, 55, 100)]
    assert values[0] < values[1]
    assert values[1] == pytest.approx(1e-3, rel=1e-5)
    assert values[1] > values[2] > values[3]
    assert values[3] == pytest.approx(1e-5, rel=1e-3)


def test_label_smoothing_matches_formula():
    loss = SparseCategoricalCrossentropyWithSmoothing(0.2, from_logits=False)
    probs = np.array([[0.7, 0.2, 0.1]], "float32")
    target = np.array([0.2 / 3 + 0.8, 0.2 / 3, 0.2 / 3])
    expected = -np.sum(target * np.log(probs[0]))
    assert float(keras.ops.convert_to_numpy(loss(np.array([0]), probs))) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        SparseCategoricalCrossentropyWithSmoothing(1.0)


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_optimizer(1e-3, total_steps=10, warmup_steps=20)


def test_interrupted_training_resumes_without_losing_epochs(tmp_path):
    x, y = _data()
    out = str(tmp_path / "run")
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, validation_split=0.25, epochs=4, batch_size=10, verbose=0,
                  callbacks=make_callbacks(out) + [InterruptAfter(2)])
    finished = model.get_weights()
    assert os.path.exists(os.path.join(out, "last.keras"))
    # A fresh process would rebuild the model: resume from the backup.
    resumed = _model()
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    resumed.fit(x, y, validation_split=0.25, epochs=4, batch_size=10, verbose=0,
                callbacks=make_callbacks(out) + [record])
    assert seen == [2, 3]  # epochs 0 and 1 were finished before the interruption
    assert not np.allclose(finished[-1], resumed.get_weights()[-1])
    with open(os.path.join(out, "log.csv")) as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]


def test_early_stopping_is_optional(tmp_path):
    def stoppers(callbacks):
        return [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]

    assert len(stoppers(make_callbacks(str(tmp_path), early_stopping_patience=2))) == 1
    assert stoppers(make_callbacks(str(tmp_path / "b"))) == []


def test_training_config_builds_the_optimizer_of_its_settings():
    config = ksm.TrainingConfig(learning_rate=2e-3, warmup_fraction=0.2, weight_decay=0.1,
                                clipnorm=0.5, ema_momentum=0.9)
    optimizer = config.make_optimizer(total_steps=50, no_decay=("bias",))
    assert (optimizer.weight_decay, optimizer.clipnorm) == (0.1, 0.5)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9
    # Zero gradients: only decoupled weight decay moves a weight, and not the bias.
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    for variable in dense.weights:
        variable.assign(np.ones(variable.shape, "float32"))
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in dense.trainable_weights])
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in (dense.kernel, dense.bias))
    np.testing.assert_allclose(kernel, 1 - 2e-5 * 0.1, rtol=1e-6)  # learning rate 1% of peak at step 0
    np.testing.assert_array_equal(bias, 1.0)
    # Warmup over 20% of the 50 steps to the peak, then cosine decay to 1% of it.
    rates = []
    for step in (5, 10, 50):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    assert rates[0] < rates[1] == pytest.approx(2e-3, rel=1e-5)
    assert rates[2] == pytest.approx(2e-5, rel=1e-3)
    # A copy with changes is checked like a new config; the original is unchanged.
    assert config.replace(epochs=3).epochs == 3 and config.epochs == 30
    with pytest.raises(ValueError, match="batch_size"):
        config.replace(batch_size=0)


def test_train_chooses_the_task_from_the_model_class():
    from keras_sparse_moe.recipes.trainer import is_dual_encoder

    assert is_dual_encoder("limoe_tiny") and not is_dual_encoder("moe_vit_tiny")
    assert not is_dual_encoder(ksm.from_preset("moe_vit_tiny", num_layers=2))
    with pytest.raises(ValueError, match="moe_vit_tiny"):
        is_dual_encoder("moe_vit_tinyy")
    with pytest.raises(ValueError, match="TrainingConfig"):
        ksm.train("moe_vit_tiny", "digits", {"epochs": 1})
