"""The corrected design-document example (recipes/seed_example.py) trains."""

import importlib.util
import pathlib

import pytest

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "seed_example.py"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("seed_example_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe():
    return _load_recipe()


def test_learns_the_rule_and_not_the_noise(recipe):
    results = recipe.main(epochs=3, seed=0)
    learnable, random = results["learnable"], results["random"]

    # The learnable rule is learnt: loss falls and test accuracy is far
    # above chance (1/3; the majority class of the test split is < 0.5).
    assert learnable["train_loss"][-1] < 0.6 * learnable["train_loss"][0]
    assert learnable["chance_accuracy"] < 0.5
    assert learnable["test_accuracy"] >= 0.8

    # Random labels: nothing to generalise, test accuracy stays near chance.
    assert random["test_accuracy"] < 0.6

    # Three experts, each sample routed to one; loads are shares that sum to 1.
    for r in (learnable, random):
        assert len(r["expert_fraction"]) == recipe.NUM_MODULES
        assert abs(sum(r["expert_fraction"]) - 1.0) < 1e-5
        assert 0.0 <= r["dropped_fraction"] < 1.0
        assert r["capacity"] == 21  # ceil(50 * 1 * 1.25 / 3)


def test_data_matches_the_document(recipe):
    x_train, y_train, x_test, y_test = recipe.make_data("random", seed=1)
    assert x_train.shape == (1000, 5) and x_test.shape == (100, 5)
    assert set(y_train.tolist()) == {0, 1, 2}
    x2, y2, _, _ = recipe.make_data("learnable", seed=1)
    assert (x2 == x_train).all()  # same features, only the labels differ
    assert set(y2.tolist()) == {0, 1, 2}


def test_rejects_bad_arguments(recipe):
    with pytest.raises(ValueError, match="epochs"):
        recipe.main(epochs=0)
    with pytest.raises(ValueError, match="kind"):
        recipe.make_data("noise", seed=0)
