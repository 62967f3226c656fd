"""Knowledge distillation from an ensemble of teachers: the loss against a
NumPy reference, frozen teachers, serialisation, and the classifier recipe
with `teachers=`."""

import json
import os
import warnings

import keras
import numpy as np
import pytest

from keras_sparse_moe.callbacks import RoutingStatistics
from keras_sparse_moe.recipes.classifier import load_classifier
from keras_sparse_moe.recipes.classifier import train_classifier
from keras_sparse_moe.recipes.distillation import Distiller
from keras_sparse_moe.recipes.distillation import distillation_loss
from keras_sparse_moe.recipes.distillation import ensemble_probabilities
from keras_sparse_moe.recipes.training import SparseCategoricalCrossentropyWithSmoothing
from keras_sparse_moe import SparseMoE
from tests.recipes.interrupt import InterruptAfter

TINY = {"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2}
QUICK = dict(
    overrides=TINY, max_batches=2, batch_size=32, verbose=0, epochs=1,
    run_eagerly=keras.backend.backend() != "jax", plots=False,
    single_image_latency=False, routing_examples=0,
)


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_distillation(teacher_logits, student_logits, temperature):
    """Hinton et al.: T^2 * KL(mean_i softmax(t_i / T) || softmax(s / T))."""
    p = np.mean([np_softmax(t / temperature) for t in teacher_logits], axis=0)
    q = np_softmax(student_logits / temperature)
    return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def test_distillation_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    teachers = [rng.normal(size=(5, 4)).astype("float32") * 3 for _ in range(3)]
    student = rng.normal(size=(5, 4)).astype("float32")
    for temperature in (1.0, 2.0, 4.0):
        targets = ensemble_probabilities(teachers, temperature)
        got = keras.ops.convert_to_numpy(distillation_loss(targets, student, temperature))
        np.testing.assert_allclose(got, np_distillation(teachers, student, temperature),
                                   rtol=1e-4, atol=1e-5)
    # A student equal to a single teacher has zero distillation loss.
    same = distillation_loss(ensemble_probabilities(teachers[:1], 2.0), teachers[0], 2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same), 0.0, atol=1e-5)


def _mlp(seed):
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)),
        keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
    ])


def test_distiller_loss_is_label_loss_plus_weighted_distillation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    student, teachers = _mlp(0), [_mlp(10), _mlp(20)]
    distiller = Distiller(student, teachers, temperature=3.0, distillation_weight=0.7)
    label_loss = SparseCategoricalCrossentropyWithSmoothing(0.1, from_logits=True)
    distiller.compile("adam", label_loss)
    got = distiller.evaluate(x, y, batch_size=16, verbose=0)
    s = keras.ops.convert_to_numpy(student(x))
    t = [keras.ops.convert_to_numpy(teacher(x)) for teacher in teachers]
    expected = float(keras.ops.convert_to_numpy(label_loss(y, s))) + 0.7 * np.mean(
        np_distillation(t, s, 3.0)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_fit_trains_the_student_and_leaves_the_teachers_unchanged():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=(64,))
    student, teachers = _mlp(0), [_mlp(10), _mlp(20)]
    before_student = [w.copy() for w in student.get_weights()]
    before_teachers = [[w.copy() for w in t.get_weights()] for t in teachers]
    distiller = Distiller(student, teachers)
    distiller.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(distiller.trainable_weights) == len(student.trainable_weights)
    distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before_student, student.get_weights()))
    for teacher, before in zip(teachers, before_teachers):
        for a, b in zip(before, teacher.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_student_learns_the_teacher_function_without_labels():
    # Labels carry no information (all zero) and the label loss has a tiny
    # weight next to the distillation term: the student can only move
    # towards the teacher's outputs by distillation.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(256, 6)).astype("float32")
    teacher = _mlp(10)
    student = _mlp(0)
    distiller = Distiller(student, [teacher], temperature=1.0, distillation_weight=100.0)
    distiller.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def gap():
        targets = ensemble_probabilities([teacher(x)], 1.0)
        return float(np.mean(keras.ops.convert_to_numpy(distillation_loss(targets, student(x)))))

    start = gap()
    distiller.fit(x, np.zeros((256,)), epochs=40, batch_size=64, verbose=0)
    assert gap() < 0.1 * start


def test_distiller_config_round_trip():
    distiller = Distiller(_mlp(0), [_mlp(10)], temperature=4.0, distillation_weight=0.5)
    restored = Distiller.from_config(distiller.get_config())
    assert restored.temperature == 4.0 and restored.distillation_weight == 0.5
    assert len(restored.teachers) == 1 and not restored.teachers[0].trainable


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"student": "model", "teachers": []}, "`student`"),
        ({"teachers": []}, "`teachers`"),
        ({"teachers": ["a.keras"]}, "`teachers`"),
        ({"temperature": 0.0}, "`temperature`"),
        ({"distillation_weight": -1.0}, "`distillation_weight`"),
    ],
)
def test_distiller_rejects_bad_arguments(kwargs, match):
    arguments = {"student": _mlp(0), "teachers": [_mlp(1)], **kwargs}
    with pytest.raises(ValueError, match=match):
        Distiller(**arguments)


def test_routing_statistics_report_the_student_only():
    def moe_model():
        inputs = keras.Input((4, 8))
        x = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, name="moe")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))

    distiller = Distiller(moe_model(), [moe_model(), moe_model()])
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = RoutingStatistics()
    history = distiller.fit(np.ones((8, 4, 8), "float32"), np.zeros((8,)), epochs=1,
                            verbose=0, callbacks=[callback])
    routing_keys = [k for k in history.history if k.endswith("/dropped_fraction")]
    assert sorted(routing_keys) == ["moe/dropped_fraction"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("teacher"))
    train_classifier("moe_vit_tiny", "digits", out, seed=0, **QUICK)
    return os.path.join(out, "model.keras")


def test_train_classifier_distils_into_a_classifier(teacher_run, tmp_path):
    out = str(tmp_path / "student")
    metrics = train_classifier("moe_vit_tiny", "digits", out, seed=1,
                               teachers=[teacher_run, teacher_run], distillation_weight=0.5,
                               **QUICK)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["settings"]["distillation"] == {
        "teachers": [teacher_run, teacher_run], "temperature": 2.0, "weight": 0.5,
    }
    # Every artifact is the student classifier, loadable on its own.
    for name in ("model.keras", "best.keras", "last.keras", "preset"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_classifier(os.path.join(out, name))
        # The student's saved optimizer state is the one the Distiller
        # updated, so it reloads whole (no "Skipping variable loading").
        assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
        assert type(model).__name__ == "MoEViTImageClassifier"
    student = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert int(keras.ops.convert_to_numpy(student.optimizer.iterations)) == 2
    with open(os.path.join(out, "run.json")) as handle:
        assert json.load(handle)["status"] == "finished"


def test_interrupted_distillation_resumes_the_student_and_its_optimizer(teacher_run, tmp_path):
    out = str(tmp_path / "student")
    kwargs = dict(QUICK, epochs=2, seed=1, teachers=[teacher_run])
    with pytest.raises(KeyboardInterrupt):
        train_classifier("moe_vit_tiny", "digits", out, callbacks=[InterruptAfter(1)],
                         **kwargs)
    after_one = keras.saving.load_model(os.path.join(out, "last.keras"))
    metrics = train_classifier("moe_vit_tiny", "digits", out, **kwargs)
    assert metrics["resumed_from_epoch"] == 1
    assert metrics["epochs_run"] == 2
    student = keras.saving.load_model(os.path.join(out, "model.keras"))
    # 2 steps per epoch: the resumed epoch continued from step 2.
    assert int(keras.ops.convert_to_numpy(student.optimizer.iterations)) == 4
    moved = [not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
             for a, b in zip(after_one.weights, student.weights)]
    assert any(moved)


def test_distilled_student_evaluated_on_validation_sees_raw_images(teacher_run, tmp_path):
    # The Distiller's validation pipeline is preprocessed (it is not a
    # keras-hub Task); the final evaluation must use the raw one, as
    # model.predict does, or the images are rescaled twice.
    from keras_sparse_moe.data import load_digits

    out = str(tmp_path / "student")
    metrics, student = train_classifier(
        "moe_vit_tiny", "digits", out, seed=1, teachers=[teacher_run],
        evaluation_split="validation", return_model=True, **QUICK,
    )
    assert metrics["split"] == "validation"
    images, labels = load_digits("validation")
    n = metrics["examples"]
    predictions = np.argmax(student.predict(images[:n].astype("float32"), verbose=0), axis=-1)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels[:n], predictions), 1)
    np.testing.assert_array_equal(metrics["confusion_matrix"], confusion)


def test_train_classifier_rejects_teachers_that_do_not_fit(teacher_run, tmp_path):
    with pytest.raises(ValueError, match="predicts 3 classes"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "a"),
                         teachers=[load_classifier("moe_vit_tiny", num_classes=3)], **QUICK)
    with pytest.raises(ValueError, match="`teachers`"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "b"), teachers=[3], **QUICK)
    with pytest.raises(ValueError, match="`distillation_temperature`"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "c"), teachers=[teacher_run],
                         distillation_temperature=0, **QUICK)


def test_train_classifier_rejects_teachers_with_other_preprocessing(teacher_run, tmp_path):
    teacher = load_classifier(teacher_run)
    teacher.preprocessor.image_converter.scale = 1 / 255.0
    with pytest.raises(ValueError, match="share the preprocessing"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "a"), teachers=[teacher],
                         **QUICK)


def test_best_weights_of_a_distiller_replace_only_the_student(tmp_path):
    # Early stopping resumed in a distillation run restores the student's
    # best weights (from best.keras) and leaves the teachers alone.
    from keras_sparse_moe.recipes.training import _weights_with_trained_model_from

    def small(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3)(inputs))

    best = small(1)
    path = str(tmp_path / "best.keras")
    best.save(path)
    distiller = Distiller(small(2), [small(3)])
    values = _weights_with_trained_model_from(distiller, path)
    by_variable = dict(zip([id(v) for v in distiller.weights], values))
    for variable, expected in zip(distiller.student.weights, best.get_weights()):
        np.testing.assert_array_equal(by_variable[id(variable)], expected)
    for variable in distiller.teachers[0].weights:
        np.testing.assert_array_equal(by_variable[id(variable)],
                                      keras.ops.convert_to_numpy(variable))
