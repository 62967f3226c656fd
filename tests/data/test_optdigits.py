"""UCI optdigits' training set: real digits of other writers, none of them
an embedded digit; its splits, its builder and its dataset spec."""

import importlib.util
import os

import numpy as np
import pytest

from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import load_dataset
from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import load_optdigits_train
from keras_sparse_moe.data import parse_spec
from keras_sparse_moe.data import resolve_dataset
from keras_sparse_moe.data.optdigits import optdigits_split_ranges

# The developer script that builds the shipped file (tools/, outside the wheel).
_spec = importlib.util.spec_from_file_location(
    "make_optdigits", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_optdigits.py")
)
make_optdigits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_optdigits)
OPTDIGITS_TRAIN_CLASS_COUNTS = make_optdigits.OPTDIGITS_TRAIN_CLASS_COUNTS
make_optdigits_train = make_optdigits.make_optdigits_train
read_optdigits_rows = make_optdigits.read_optdigits_rows

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


def _write_rows(path, images, labels, header=True):
    lines = ["@relation optdigits", "@data"] if header else []
    lines += [",".join(str(int(v)) for v in list(image.reshape(-1)) + [label]) for image, label in zip(images, labels)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_all_is_uci_training_set_in_the_digits_format():
    images, labels = load_optdigits_train("all")
    assert images.shape == (3823, 8, 8, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and images.max() == 16 and images.min() == 0
    assert tuple(np.bincount(labels, minlength=10)) == OPTDIGITS_TRAIN_CLASS_COUNTS
    assert len({image.tobytes() for image in images}) == 3823  # no duplicate rows


def test_no_image_is_an_embedded_digit():
    # The whole point of the file: pretraining on it can never train on an
    # embedded digit (test split or any other).
    embedded, _ = load_digits("all")
    embedded = {image.tobytes() for image in embedded}
    images, _ = load_optdigits_train("all")
    assert not any(image.tobytes() in embedded for image in images)


def test_splits_partition_the_data_in_order():
    everything, all_labels = load_optdigits_train("all")
    train, train_labels = load_optdigits_train("train")
    validation, validation_labels = load_optdigits_train("validation")
    assert (len(train), len(validation)) == (3441, 382)
    np.testing.assert_array_equal(np.concatenate([train, validation]), everything)
    np.testing.assert_array_equal(np.concatenate([train_labels, validation_labels]), all_labels)
    assert len(load_optdigits_train("train", validation_fraction=0)[0]) == 3823
    assert optdigits_split_ranges(0.25)["validation"] == (2867, 3823)
    normalized, _ = load_optdigits_train("validation", normalize=True)
    assert normalized.dtype == np.float32 and normalized.max() == 1.0
    np.testing.assert_allclose(normalized * 16, validation)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "must be one of"),
        ({"split": "validation", "validation_fraction": 0}, "'validation' split is empty"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_optdigits_train(**kwargs)


def test_builder_reproduces_the_shipped_file_from_the_whole_uci_data(tmp_path):
    # KEEL's optdigits.dat is optdigits.tra in UCI's order followed by
    # optdigits.tes (the embedded digits): rebuilding from that layout must
    # drop exactly the 1,797 embedded digits and give the shipped arrays.
    train, train_labels = load_optdigits_train("all")
    digits, digit_labels = load_digits("all")
    source = _write_rows(tmp_path / "optdigits.dat", np.concatenate([train, digits])[..., 0],
                         np.concatenate([train_labels, digit_labels]))
    out = str(tmp_path / "out" / "optdigits_train.npz")
    os.makedirs(os.path.dirname(out))
    path, kept, dropped = make_optdigits_train(str(source), out)
    assert (path, kept, dropped) == (out, 3823, 1797)
    with np.load(out) as data:
        np.testing.assert_array_equal(data["images"], train[..., 0])
        np.testing.assert_array_equal(data["labels"], train_labels)
    assert sorted(os.listdir(os.path.dirname(out))) == ["optdigits_train.npz"]  # no temporary left


def test_builder_refuses_data_that_is_not_uci_training_set(tmp_path):
    train, labels = load_optdigits_train("validation")
    source = _write_rows(tmp_path / "part.dat", train[..., 0], labels, header=False)
    out = tmp_path / "x.npz"
    with pytest.raises(ValueError, match="optdigits.tra has 3823"):
        make_optdigits_train(str(source), str(out))
    assert not out.exists()
    assert make_optdigits_train(str(source), str(out), strict=False)[1:] == (382, 0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3\n", "line 1: expected 64 comma-separated ints"),
        (",".join(["17"] * 64 + ["1"]) + "\n", "in 0..16"),
        (",".join(["0"] * 64 + ["x"]) + "\n", "line 1"),
        ("@relation optdigits\n\n", "holds no optdigits rows"),
    ],
)
def test_reader_names_the_bad_line(tmp_path, text, match):
    path = tmp_path / "bad.dat"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_optdigits_rows(str(path))


def test_dataset_spec_builds_normalized_pipelines_without_a_test_split():
    assert parse_spec("optdigits-train") == ("optdigits-train", None)
    data = build_datasets("optdigits-train", image_size=16, batch_size=32, validation_fraction=0.1)
    assert data.info.counts == {"train": 3441, "validation": 382}
    assert data.info.num_classes == 10 and data.info.source == "optdigits-train"
    assert data.test is None
    images, labels = next(iter(data.validation))
    assert tuple(images.shape) == (32, 16, 16, 1) and float(np.max(images)) <= 1.0
    first, first_labels = load_optdigits_train("validation")
    np.testing.assert_array_equal(np.asarray(labels), first_labels[:32])
    raw, info = load_dataset("optdigits-train", "all")
    assert sum(1 for _ in raw) == 3823 and info.counts == {"train": 3441, "validation": 382}


def test_dataset_spec_bad_input():
    with pytest.raises(ValueError, match="has no test split"):
        resolve_dataset("optdigits-train", test_fraction=0.2)
    with pytest.raises(ValueError, match=r"has no 'test' split.*\['train', 'validation'\]"):
        load_dataset("optdigits-train", "test")
    with pytest.raises(ValueError, match="Did you mean 'optdigits-train'"):
        parse_spec("optdigits")
