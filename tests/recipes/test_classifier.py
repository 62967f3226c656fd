"""Behaviour of the classifier recipe: artifacts, resume, evaluation, bad inputs."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.recipes.classifier import evaluate_classifier
from keras_sparse_moe.recipes.classifier import load_classifier
from keras_sparse_moe.recipes.classifier import representative_images
from keras_sparse_moe.recipes.classifier import train_classifier
from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.metrics import classification_report
from keras_sparse_moe.recipes.routing import routing_by_class
from tests.recipes.interrupt import InterruptAfter
from tests.configs import MOE_VIT_OVERRIDES

# A 2-block width-16 MoE-ViT (MoE in block 1) trained on 2 batches per epoch.
# Step-by-step execution is quicker than tracing a graph for so few steps,
# except on JAX, where eager op dispatch is slower than one jit compilation.
TINY = MOE_VIT_OVERRIDES
CONFIG = TrainingConfig(max_batches=2, batch_size=32)
QUICK = dict(
    overrides=TINY, verbose=0,
    run_eagerly=keras.backend.backend() != "jax",
    single_image_latency=False, routing_examples=64,
)
PNG_MAGIC = b"\x89PNG"


def _logged_epochs(directory):
    with open(os.path.join(directory, "log.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """An interrupted 3-epoch run (2 epochs done), then the same call again."""
    keras.utils.set_random_seed(0)
    out = str(tmp_path_factory.mktemp("run"))
    with pytest.raises(KeyboardInterrupt):
        train_classifier("moe_vit_tiny", "digits", out, CONFIG.replace(epochs=3),
                         callbacks=[InterruptAfter(2)],
                         **QUICK)
    interrupted = {
        "epochs": _logged_epochs(out),
        "backup": os.path.isdir(os.path.join(out, "backup")),
        "status": json.load(open(os.path.join(out, "run.json")))["status"],
    }
    metrics = train_classifier("moe_vit_tiny", "digits", out, CONFIG.replace(epochs=3), **QUICK)
    return out, interrupted, metrics


def test_interrupted_run_resumes_after_last_finished_epoch(resumed_run):
    out, interrupted, metrics = resumed_run
    assert interrupted == {"epochs": [0, 1], "backup": True, "status": "running"}
    assert metrics["resumed_from_epoch"] == 2
    assert metrics["epochs_run"] == 3
    assert _logged_epochs(out) == [0, 1, 2]  # no finished epoch redone or lost
    assert not os.path.exists(os.path.join(out, "backup"))
    assert json.load(open(os.path.join(out, "run.json")))["status"] == "finished"


def test_training_writes_all_artifacts(resumed_run):
    out, _, metrics = resumed_run
    for name in ("model.keras", "best.keras", "last.keras", "metrics.json", "log.csv"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.isfile(os.path.join(out, "preset", "config.json"))
    for name in ("training_curves.png", "routing_heatmap.png"):
        with open(os.path.join(out, name), "rb") as handle:
            assert handle.read(4) == PNG_MAGIC
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    assert saved["backend"] == keras.backend.backend()
    assert saved["examples"] == 64  # 2 test batches of 32
    confusion = np.asarray(saved["confusion_matrix"])
    assert saved["accuracy"] == pytest.approx(np.trace(confusion) / 64)
    assert len(saved["per_class"]) == 10
    assert saved["params_total"] > saved["params_active"] > 0
    assert saved["latency_ms_per_image"] > 0
    (layer, stats), = saved["routing"].items()
    assert layer == "encoder_block_1/moe"
    by_class = np.array(stats["by_class"])
    assert by_class.shape == (10, 8)
    present = by_class.sum(axis=1) > 0
    np.testing.assert_allclose(by_class[present].sum(axis=1), 1.0, atol=1e-5)
    with open(os.path.join(out, "log.csv")) as handle:
        assert "moe/load_imbalance" in handle.readline()


def test_rerun_of_finished_run_returns_its_metrics(resumed_run):
    out, _, metrics = resumed_run
    again = train_classifier("moe_vit_tiny", "digits", out, CONFIG.replace(epochs=3), **QUICK)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert _logged_epochs(out) == [0, 1, 2]


def test_rerun_with_other_settings_is_refused(resumed_run):
    out, _, _ = resumed_run
    with pytest.raises(ValueError, match="different settings.*epochs: 3 -> 5"):
        train_classifier("moe_vit_tiny", "digits", out, CONFIG.replace(epochs=5), **QUICK)
    # Random initial weights are another run too.
    with pytest.raises(ValueError, match="load_weights: True -> False"):
        train_classifier("moe_vit_tiny", "digits", out, CONFIG.replace(epochs=3), load_weights=False,
                         **QUICK)


def test_evaluate_saved_model_writes_metrics(resumed_run, tmp_path):
    out, _, metrics = resumed_run
    result = evaluate_classifier(
        os.path.join(out, "model.keras"), "digits", batch_size=32, max_batches=2,
        output_dir=str(tmp_path), single_image_latency=False, routing_examples=32,
    )
    assert result["accuracy"] == pytest.approx(metrics["accuracy"])
    assert result["examples"] == 64
    saved = json.load(open(tmp_path / "metrics.json"))
    assert [c["name"] for c in saved["per_class"]] == [str(d) for d in range(10)]
    assert (tmp_path / "routing_heatmap.png").read_bytes()[:4] == PNG_MAGIC


def test_evaluate_preset_directory_matches_saved_model(resumed_run):
    out, _, metrics = resumed_run
    result = evaluate_classifier(os.path.join(out, "preset"), "digits", batch_size=32,
                                 max_batches=2, routing_examples=0, single_image_latency=False)
    assert result["accuracy"] == pytest.approx(metrics["accuracy"])


def test_shipped_digits_preset_accuracy_on_the_test_split():
    # docs/results.md: 356/359 test images on every backend (pretrained on
    # synthetic digits, fine-tuned on the training split together with
    # optdigits-train); the target is 0.98 = 352/359.
    metrics = evaluate_classifier("moe_vit_tiny_digits", "digits", batch_size=128,
                                  routing_examples=0, single_image_latency=False)
    assert metrics["examples"] == 359
    assert metrics["accuracy"] >= 355 / 359 > 0.98


def test_shipped_synthetic_pretrained_preset_reads_real_digits():
    # Trained on synthetic digits only (docs/results.md: 0.856 of the real
    # training digits); the starting point of moe_vit_tiny_digits.
    from keras_sparse_moe.data import load_digits
    from keras_sparse_moe.presets import list_presets

    (row,) = [r for r in list_presets() if r["name"] == "moe_vit_tiny_synthetic_digits"]
    assert row["has_weights"] and row["task"] == "MoEViTImageClassifier"
    images, labels = load_digits("train", validation_fraction=0.0)
    model = load_classifier("moe_vit_tiny_synthetic_digits")
    predicted = model.predict(images.astype("float32"), batch_size=256, verbose=0).argmax(-1)
    assert np.mean(predicted == labels) >= 0.83


def test_representative_images_are_preprocessed_training_images():
    images = representative_images("moe_vit_tiny", "digits", samples=10)
    assert images.shape[0] == 10 and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 + 1e-6


def test_classification_report_known_values():
    report = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.6)
    a, b, c = report["per_class"]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (b["precision"], b["recall"]) == pytest.approx((2 / 3, 1.0))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_routing_by_class_follows_the_router():
    from keras_sparse_moe import SparseMoE

    inputs = keras.Input((3, 4))
    moe = SparseMoE(2, 8, top_k=1, capacity_factor=None, name="moe")
    model = keras.Model(inputs, moe(inputs))
    moe.router.kernel.assign(np.array([[1.0, -1.0]] + [[0.0, 0.0]] * 3, "float32"))
    x = np.zeros((4, 3, 4), "float32")
    x[:2, :, 0] = 1.0  # class 0: feature 0 > 0 -> expert 0
    x[2:, :, 0] = -1.0  # class 1 -> expert 1
    routing = routing_by_class(model, x, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(routing["moe"]["by_class"], [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("router", [dict(top_k=2, capacity_factor=1.0),
                                    dict(router="soft", slots_per_expert=1)])
def test_routing_by_class_statistics_are_the_layers_over_all_images(router):
    """Routing is recorded in compiled batches of equal size (the last one
    padded, the padding masked); the merged statistics are those of
    `SparseMoE.routing_stats` on all the images in one call."""
    from keras_sparse_moe import SparseMoE

    inputs = keras.Input((3, 4))
    moe = SparseMoE(4, 8, name="moe", **router)
    model = keras.Model(inputs, moe(inputs))
    x = np.random.default_rng(0).normal(size=(10, 3, 4)).astype("float32")
    labels = np.arange(10) % 3
    routing = routing_by_class(model, x, labels, 3, batch_size=4)["moe"]
    expected = moe.routing_stats(x)
    np.testing.assert_allclose(routing["expert_fraction"], expected["expert_fraction"], atol=1e-6)
    assert routing["dropped_fraction"] == pytest.approx(expected["dropped_fraction"], abs=1e-6)
    assert routing["load_imbalance"] == pytest.approx(expected["load_imbalance"], abs=1e-5)
    if "expert_index" in expected:
        index = expected["expert_index"].reshape(10, -1)
        shares = [np.bincount(index[labels == c].ravel(), minlength=4) for c in range(3)]
    else:
        probs = expected["router_probs"].reshape(10, -1, 4)
        shares = [probs[labels == c].sum(axis=(0, 1)) for c in range(3)]
    for c in range(3):
        np.testing.assert_allclose(routing["by_class"][c], shares[c] / shares[c].sum(), atol=1e-6)


def test_evaluation_pass_matches_separate_predictions_and_routing():
    """`evaluate` runs one pass returning the logits and the routing (last
    batch padded and masked): its predictions are `predict`'s and its routing
    statistics are `routing_by_class` on all the images in one call."""
    from keras_sparse_moe.data import DatasetInfo
    from keras_sparse_moe.data import make_pipeline
    from keras_sparse_moe.recipes.classifier import _evaluate
    from keras_sparse_moe.recipes.classifier import preprocess

    keras.utils.set_random_seed(1)
    model = load_classifier("moe_vit_tiny", num_classes=3, load_weights=False, overrides=TINY)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 16, size=(11, 16, 16, 1)).astype("float32")
    labels = np.arange(11) % 3
    info = DatasetInfo("mine", "arrays", 3, ("a", "b", "c"), {"test": 11})
    ds = make_pipeline(images, labels, batch_size=4)
    report, routing = _evaluate(model, ds, info, 4, routing_examples=64, single_latency=False)

    predicted = np.asarray(model.predict_on_batch(images)).argmax(-1)
    expected = classification_report(labels, predicted, 3, info.class_names)
    assert report["accuracy"] == expected["accuracy"]
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    separate = routing_by_class(model, preprocess(model, images), labels, 3, batch_size=11)
    assert sorted(routing) == sorted(separate) and separate
    for name, stats in separate.items():
        assert routing[name]["examples"] == 11
        np.testing.assert_allclose(routing[name]["by_class"], stats["by_class"], atol=1e-6)
        np.testing.assert_allclose(routing[name]["expert_fraction"], stats["expert_fraction"],
                                   atol=1e-6)
        assert routing[name]["dropped_fraction"] == pytest.approx(stats["dropped_fraction"],
                                                                  abs=1e-6)


def test_a_loaded_classifier_is_built_through_its_preprocessor():
    """Every layer of a loaded task is built, so Keras' JAX `predict_on_batch`
    does not first run the whole task eagerly to build it (op by op: that was
    most of `evaluate`'s two minutes on JAX)."""
    model = load_classifier("moe_vit_tiny_digits")
    assert [layer.name for layer in model._flatten_layers() if not layer.built] == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"data": "mnist"}, ValueError, "Accepted forms"),
        ({"data": "folder:/no/such/folder"}, (ValueError, FileNotFoundError), "no/such/folder"),
        ({"preset": "limoe_tiny"}, ValueError, "not an image classifier"),
        ({"preset": "moe_vit_tinyy"}, ValueError, "moe_vit_tiny"),
        ({"config": {"epochs": 3}}, ValueError, "must be a TrainingConfig"),
    ],
)
def test_bad_inputs_fail_clearly(tmp_path, kwargs, error, match):
    arguments = {"preset": "moe_vit_tiny", "data": "digits", "output_dir": str(tmp_path / "out"),
                 "config": CONFIG}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        train_classifier(**arguments, **QUICK)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"augment": "rotate"}, "augment"),
        ({"deterministic": "yes"}, "`deterministic` must be True or False"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"ema_momentum": 1.0}, "ema_momentum"),
    ],
)
def test_bad_training_config_fails_clearly(fields, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig(**fields)


def test_num_classes_in_the_overrides(tmp_path):
    # load_classifier: num_classes may come through `overrides` (e.g. the CLI's --set), once.
    assert load_classifier("moe_vit_tiny", overrides={"num_classes": 3}).num_classes == 3
    assert load_classifier("moe_vit_tiny", num_classes=3,
                           overrides={"num_classes": 3}).num_classes == 3
    with pytest.raises(ValueError, match="num_classes=5 contradicts the 3 classes"):
        load_classifier("moe_vit_tiny", num_classes=3, overrides={"num_classes": 5})
    # Training sizes the head from the data: the override is refused before any work.
    with pytest.raises(ValueError, match="num_classes=10 is not allowed when training"):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path / "out"), CONFIG,
                         **{**QUICK, "overrides": {"num_classes": 10}})
    assert not os.path.exists(tmp_path / "out")


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="directory"):
        train_classifier("moe_vit_tiny", "digits", str(blocker / "out"), CONFIG, **QUICK)
    with pytest.raises(ValueError, match="not a directory"):
        train_classifier("moe_vit_tiny", "digits", str(blocker), CONFIG, **QUICK)


def test_evaluate_rejects_class_count_mismatch(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        os.makedirs(tmp_path / name)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(ValueError, match="predicts 10 classes.*has 2"):
        evaluate_classifier("moe_vit_tiny", f"folder:{tmp_path}", routing_examples=0)


@pytest.mark.single_backend("torch")
def test_trained_model_file_loads_in_a_fresh_process_with_its_optimizer(resumed_run):
    # A user's `import keras_sparse_moe` must register everything a recipe's
    # model.keras refers to (its label-smoothed loss), and the file must bring
    # back the trained optimizer state without warnings. The registration does
    # not depend on the backend; the resume test above loads the same file
    # with its optimizer state on every backend.
    import subprocess
    import sys

    out, _, _ = resumed_run
    script = (
        "import sys, warnings, keras, keras_sparse_moe\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    model = keras.saving.load_model(sys.argv[1])\n"
        "bad = [str(w.message) for w in caught\n"
        "       if 'compile()' in str(w.message) or 'Skipping variable' in str(w.message)]\n"
        "print(type(model.loss).__name__, int(model.optimizer.iterations), len(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, os.path.join(out, "model.keras")],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, KERAS_BACKEND=keras.backend.backend()),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loss, iterations, warnings_count = result.stdout.split()[-3:]
    assert loss == "SparseCategoricalCrossentropyWithSmoothing"
    assert int(iterations) > 0 and int(warnings_count) == 0
