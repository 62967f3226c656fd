"""Model soups: weight averaging of classifiers, fold by fold for cross-validation."""

import json
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.data import load_digits
from keras_sparse_moe.presets import save_to_preset
from keras_sparse_moe.recipes.classifier import load_classifier
from keras_sparse_moe.recipes.cross_validation import cross_validate_classifier
from keras_sparse_moe.recipes.cross_validation import paired_comparison
from keras_sparse_moe.recipes.soup import cross_validate_soup
from keras_sparse_moe.recipes.soup import interpolate_weights
from keras_sparse_moe.recipes.soup import uniform_soup

TINY = {"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2}
QUICK = dict(overrides=TINY, epochs=1, max_batches=2, batch_size=32, verbose=0,
             run_eagerly=keras.backend.backend() != "jax")


def _tiny(num_classes=10, seed=0):
    keras.utils.set_random_seed(seed)
    return load_classifier("moe_vit_tiny", num_classes=num_classes, overrides=TINY)


def test_soup_weights_are_the_mean_of_the_ingredients():
    models = [_tiny(seed=s) for s in range(3)]
    assert not np.allclose(models[0].get_weights()[0], models[1].get_weights()[0])
    soup = uniform_soup(models)
    assert soup is not models[0] and type(soup) is type(models[0])
    assert soup.num_classes == 10
    for i, value in enumerate(soup.get_weights()):
        np.testing.assert_allclose(value, np.mean([m.get_weights()[i] for m in models], axis=0),
                                   rtol=1e-6, atol=1e-7)
    # The ingredients are unchanged, and the soup runs.
    images = load_digits("test")[0][:8].astype("float32")
    assert soup.predict(images, verbose=0).shape == (8, 10)


def test_soup_of_copies_predicts_like_the_model(tmp_path):
    model = _tiny(seed=3)
    path = str(tmp_path / "model.keras")
    model.save(path)
    soup = uniform_soup([model, path, path])
    images = load_digits("test")[0][:16].astype("float32")
    np.testing.assert_allclose(soup.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)
    # The soup is a fresh, untrained model: its preset holds no optimizer state.
    preset = save_to_preset(soup, str(tmp_path / "preset"))
    again = load_classifier(preset)
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert os.path.getsize(os.path.join(preset, "task.weights.h5")) < 200_000


@pytest.mark.parametrize(
    "models, match",
    [
        ("runs/model.keras", "must be a list of at least two"),
        (["one"], "at least two models"),
        ([], "at least two models"),
    ],
)
def test_bad_model_lists(models, match):
    with pytest.raises(ValueError, match=match):
        uniform_soup(models)


def test_models_of_different_architectures_are_refused():
    with pytest.raises(ValueError, match="Model 1 of `models`.*different architecture"):
        uniform_soup([_tiny(10), _tiny(3)])
    wider = load_classifier("moe_vit_tiny", num_classes=10, overrides={**TINY, "mlp_dim": 32})
    with pytest.raises(ValueError, match="different architecture"):
        uniform_soup([_tiny(10), wider])


def test_interpolation_runs_from_start_to_end(tmp_path):
    start, end = _tiny(seed=4), _tiny(seed=5)
    path = str(tmp_path / "end.keras")
    end.save(path)
    images = load_digits("test")[0][:16].astype("float32")
    for alpha in (0, 0.3, 1.0, np.float32(0.5)):
        mixed = interpolate_weights(start, path, alpha)
        assert mixed is not start and type(mixed) is type(start)
        for a, b, m in zip(start.get_weights(), end.get_weights(), mixed.get_weights()):
            np.testing.assert_allclose(m, (1 - float(alpha)) * a + float(alpha) * b,
                                       rtol=1e-6, atol=1e-6)
    # The ends are the models themselves, and neither input is changed.
    np.testing.assert_allclose(interpolate_weights(start, end, 0).predict(images, verbose=0),
                               start.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(interpolate_weights(start, end, 1).predict(images, verbose=0),
                               end.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load_classifier(path).get_weights()[0], end.get_weights()[0])


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_interpolation_rejects_a_bad_alpha(alpha):
    with pytest.raises(ValueError, match=r"`alpha` must be a number in \[0, 1\]"):
        interpolate_weights(_tiny(seed=0), _tiny(seed=1), alpha)


def test_interpolation_refuses_models_of_different_architectures():
    with pytest.raises(ValueError, match="`end`.*different architecture.*from `start`"):
        interpolate_weights(_tiny(10), _tiny(3), 0.5)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cv_soup"))
    dirs = [os.path.join(out, f"seed_{s}") for s in (0, 1)]
    for seed, directory in zip((0, 1), dirs):
        cross_validate_classifier("moe_vit_tiny", directory, folds=2, seed=seed, **QUICK)
    return out, dirs


def test_cross_validated_soup_predicts_each_block_with_that_fold_soup(two_seeds):
    out, dirs = two_seeds
    summary = cross_validate_soup(dirs, os.path.join(out, "soup"))
    _, labels = load_digits("train", validation_fraction=0.0)
    assert summary["examples"] == 1438 and summary["folds"] == 2
    np.testing.assert_array_equal(summary["labels"], labels)
    predictions = np.asarray(summary["predictions"])
    assert summary["correct"] == int(np.sum(predictions == labels))
    assert [i["seed"] for i in summary["ingredients"]] == [0, 1]
    ingredient = [json.load(open(os.path.join(d, "cv_summary.json")))["accuracy"] for d in dirs]
    assert summary["ingredient_accuracy_mean"] == pytest.approx(np.mean(ingredient))
    assert 0.0 <= summary["ensemble_accuracy"] <= 1.0
    # Block 1 (samples 719..1437) is predicted by the soup of the two fold-1 models.
    soup = uniform_soup([os.path.join(d, "fold_1", "model.keras") for d in dirs])
    images, _ = load_digits("validation", validation_fold=(1, 2))
    expected = np.argmax(soup.predict(images.astype("float32"), verbose=0), axis=-1)
    np.testing.assert_array_equal(predictions[719:], expected)
    saved = json.load(open(os.path.join(out, "soup", "cv_summary.json")))
    assert saved["predictions"] == summary["predictions"]
    # The summary compares with any cross-validated recipe.
    other = json.load(open(os.path.join(dirs[0], "cv_summary.json")))
    assert paired_comparison(summary, other)["accuracy_a"] == pytest.approx(summary["accuracy"])


def test_cross_validated_soup_bad_input(two_seeds, tmp_path):
    _, dirs = two_seeds
    for bad in (dirs[:1], dirs[0], 3):
        with pytest.raises(ValueError, match="at least two cross-validation directories"):
            cross_validate_soup(bad)
    with pytest.raises(ValueError, match="not a finished cross-validation run"):
        cross_validate_soup([dirs[0], str(tmp_path / "missing")])
