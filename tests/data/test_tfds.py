"""`tfds:NAME` sources without any network access: TFDS mock data for
catalogue datasets, and a tiny local builder prepared in a temporary folder."""

import time

import keras
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_sparse_moe.data import build_datasets  # noqa: E402
from keras_sparse_moe.data import build_image_text_datasets  # noqa: E402
from keras_sparse_moe.data import load_dataset  # noqa: E402

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


class KsmTinyShades(tfds.core.GeneratorBasedBuilder):
    """40 6x6 RGB images whose pixel value identifies them; only a train split."""

    # Defined in this test package, so TFDS looks for the builder's code as a
    # package resource when it prepares it, with `importlib_resources`: a
    # dependency of this project because TFDS declares it only for Python < 3.9.

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(6, 6, 3)),
                    "shade": tfds.features.ClassLabel(names=["dark", "light"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"picture": np.full((6, 6, 3), 5 * i, np.uint8), "shade": int(i >= n // 2)}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    KsmTinyShades(data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_local_builder_splits_are_carved_by_count(tiny_data_dir):
    spec = "tfds:ksm_tiny_shades"
    ids = {}
    for split in ("train", "validation", "test"):
        ds, info = load_dataset(spec, split, data_dir=tiny_data_dir, download=False)
        ids[split] = sorted(int(image.numpy()[0, 0, 0]) // 5 for image, _ in ds)
    assert info.counts == {"train": 29, "validation": 3, "test": 8}
    assert info.class_names == ("dark", "light")
    assert info.image_shape == (6, 6, 3)
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(40))  # disjoint, complete
    again, _ = load_dataset(spec, "test", data_dir=tiny_data_dir)
    assert sorted(int(image.numpy()[0, 0, 0]) // 5 for image, _ in again) == ids["test"]  # deterministic
    train, val, test, info = build_datasets(spec, image_size=4, batch_size=8, data_dir=tiny_data_dir, seed=2)
    images, labels = next(iter(train))
    assert images.shape == (8, 4, 4, 3) and labels.dtype.name == "int32"
    assert sum(int(b[1].shape[0]) for b in test) == 8


def test_local_builder_options(tiny_data_dir):
    _, info = load_dataset(
        "tfds:ksm_tiny_shades", "test", data_dir=tiny_data_dir, train_split="train[:30]", test_split="train[30:]",
        validation_fraction=0,
    )
    assert info.counts == {"train": 30, "test": 10}
    with pytest.raises(ValueError, match="no split 'training'"):
        load_dataset("tfds:ksm_tiny_shades", data_dir=tiny_data_dir, train_split="training")
    with pytest.raises(ValueError, match="no 'validation' split"):
        load_dataset("tfds:ksm_tiny_shades", "validation", data_dir=tiny_data_dir, validation_fraction=0)


def test_mock_mnist_classification(mock):
    train, val, test, info = build_datasets("tfds:mnist", image_size=8, batch_size=4, channels=3)
    assert info.num_classes == 10 and info.class_names[7] == "7"
    assert info.image_shape == (28, 28, 1) and info.max_value == 255
    assert set(info.counts) == {"train", "validation", "test"}
    images, labels = next(iter(train))
    assert images.shape == (4, 8, 8, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32" and 0.0 <= float(np.min(images)) <= float(np.max(images)) <= 1.0
    assert info.zero_shot_prompts()[3][0] == "a photo of a 3."


def test_mock_coco_captions_image_text(mock):
    train, val, test, info = build_image_text_datasets("tfds:coco_captions", image_size=8, batch_size=4)
    assert info.class_names is None and info.caption_templates is None
    batch = next(iter(train))
    assert sorted(batch) == ["captions", "images"]
    assert batch["images"].shape == (4, 8, 8, 3) and batch["captions"].shape == (4,)
    assert all(isinstance(c, bytes) and c for c in batch["captions"].numpy())
    with pytest.raises(ValueError, match="no class labels"):
        build_datasets("tfds:coco_captions", image_size=8)
    with pytest.raises(ValueError, match="no text feature 'nope'"):
        build_image_text_datasets("tfds:coco_captions", image_size=8, caption_key="nope")


def test_bad_tfds_specs(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'tfds:mnist'"):
        build_datasets("tfds:mnistt")
    with pytest.raises(ValueError, match="not prepared.*download=True"):
        build_datasets("tfds:mnist", data_dir=str(tmp_path), download=False)


@pytest.mark.single_backend("torch")  # short eager training (the tower export: a TF child)
def test_dual_encoder_commands_use_the_data_dir(tiny_data_dir, tmp_path, capsys,
                                                small_limoe_preset):
    # --data-dir / --no-download reach the image-text pipelines of dual encoders
    # too (zero-shot evaluation, training, tower export), not only classifiers.
    from keras_sparse_moe.cli import main
    from keras_sparse_moe.recipes.dual_encoder import evaluate_zero_shot

    spec = "tfds:ksm_tiny_shades"
    options = {"data_dir": tiny_data_dir, "download": False}
    metrics = evaluate_zero_shot("limoe_tiny_digits", spec, data_options=options)
    assert metrics["num_examples"] == 8 and len(metrics["per_class"]) == 2
    assert main(["evaluate", "--model", "limoe_tiny_digits", "--data", spec,
                 "--data-dir", tiny_data_dir, "--no-download"]) == 0
    assert "zero-shot accuracy" in capsys.readouterr().out
    out = str(tmp_path / "train")
    assert main(["train", "--preset", small_limoe_preset, "--data", spec, "--data-dir", tiny_data_dir,
                 "--no-download", "--epochs", "1", "--batch-size", "8", "--max-batches", "1",
                 "--no-plots", "--quiet", "--output", out,
                 *([] if keras.backend.backend() == "jax" else ["--run-eagerly"])]) == 0
    import json
    import os

    settings = json.load(open(os.path.join(out, "run.json")))["settings"]
    assert settings["data_options"] == options
    assert not {"training_curves.png", "routing_heatmap.png"} & set(os.listdir(out))  # --no-plots
    towers = str(tmp_path / "towers")
    assert main(["export", "--model", "limoe_tiny_digits", "--output", towers, "--data", spec,
                 "--data-dir", tiny_data_dir, "--no-download"]) == 0
    assert json.load(open(os.path.join(towers, "class_names.json")))["class_names"] == ["dark", "light"]
    # Without the data dir the dataset is not found (and nothing is downloaded).
    with pytest.raises(ValueError, match="not prepared"):
        evaluate_zero_shot("limoe_tiny_digits", spec,
                           data_options={"data_dir": str(tmp_path / "empty"), "download": False})
    with pytest.raises(ValueError, match="`data_options` must be None or a dict"):
        evaluate_zero_shot("limoe_tiny_digits", spec, data_options="data_dir")


def test_preparing_a_dataset_prints_progress_on_stderr_not_stdout(tmp_path, capfd):
    data_dir = str(tmp_path / "fresh")
    data = build_datasets("tfds:ksm_tiny_shades", image_size=6, batch_size=4, data_dir=data_dir)
    assert data.info.counts["train"] > 0
    out, err = capfd.readouterr()
    assert "Downloading and preparing" not in out and "prepared" not in out
    assert "Downloading and preparing" in err


@pytest.fixture
def offline(monkeypatch):
    """No network: every HTTP(S) request goes to a proxy that refuses the
    connection (nothing leaves the machine)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.single_backend
def test_an_offline_download_fails_quickly_with_the_good_message(offline, tmp_path):
    """TFDS retries a failed request 10 times with exponential back-off
    (almost four minutes); the package caps the retries."""
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"Could not download and prepare TFDS dataset 'mnist'"
                       r".*Prepare it on a machine with network access"):
        build_datasets("tfds:mnist", data_dir=str(tmp_path / "tfds"))
    assert time.monotonic() - start < 15


@pytest.mark.single_backend
def test_a_train_that_cannot_get_its_data_leaves_no_run_folder(offline, tmp_path, capsys):
    from keras_sparse_moe.cli import main

    out = tmp_path / "run"
    code = main(["train", "--data", "tfds:mnist", "--data-dir", str(tmp_path / "tfds"),
                 "--output", str(out), "--epochs", "1", "--quiet"])
    assert code == 2
    assert "Could not download and prepare TFDS dataset 'mnist'" in capsys.readouterr().err
    assert not out.exists()
