"""Dataset specs end to end on the embedded digits: build_datasets counts,
the test split never reaches training, captions, prompts, bad specs."""

import json
import logging

import numpy as np
import pytest

from keras_sparse_moe.data import DIGIT_CAPTION_TEMPLATES
from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import build_image_text_datasets
from keras_sparse_moe.data import digit_captions
from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import load_dataset
from keras_sparse_moe.data import load_image_text_dataset
from keras_sparse_moe.data import parse_spec
from keras_sparse_moe.data import zero_shot_prompts

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


def _rows(images):
    """The images (scaled to [0, 1]) as a sorted list of byte strings."""
    pixels = np.round(np.asarray(images) * 16).astype(np.uint8).reshape(len(images), -1)
    return sorted(row.tobytes() for row in pixels)


def test_digits_datasets_counts_and_test_never_in_training():
    train, val, test, info = build_datasets("digits", batch_size=64, augment=False, drop_remainder=False)
    assert info.counts == {"train": 1294, "validation": 144, "test": 359}
    assert info.num_classes == 10 and info.max_value == 16 and info.image_shape == (8, 8, 1)
    seen = {}
    for name, ds in (("train", train), ("validation", val), ("test", test)):
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        seen[name] = np.concatenate(images)
        assert len(np.concatenate(labels)) == info.counts[name]
    for name in ("train", "validation", "test"):
        expected = load_digits(name)[0].astype(np.float32) / 16
        assert _rows(seen[name]) == _rows(expected)  # exactly that split's images, shuffled or not
    json.dumps(info.to_dict())  # metadata is JSON-serialisable


def test_validation_fraction_zero_gives_no_validation_pipeline():
    train, val, test, info = build_datasets("digits", image_size=4, batch_size=512, validation_fraction=0)
    assert val is None and info.counts == {"train": 1438, "test": 359}
    assert [int(b[1].shape[0]) for b in train] == [512, 512]  # training drops the partial batch


def test_digit_captions_and_zero_shot_prompts():
    ds, info = load_image_text_dataset("digits", "test")
    example = next(iter(ds))
    label = int(example["label"])
    captions = [c.decode() for c in example["captions"].numpy()]
    assert captions == digit_captions([label])[0]
    assert len(captions) == len(DIGIT_CAPTION_TEMPLATES) >= 5
    assert "a handwritten digit seven" in digit_captions([7])[0]
    assert "a photo of the number 7" in digit_captions([7])[0]
    prompts = info.zero_shot_prompts()
    assert len(prompts) == 10 and prompts[7][0] == "a handwritten digit seven"
    assert zero_shot_prompts(["sea_lion"], ["a photo of a {}.", "{name}!"]) == [["a photo of a sea lion.", "sea lion!"]]
    with pytest.raises(ValueError, match="allowed fields"):
        zero_shot_prompts(["cat"], ["a {colour} cat"])


def test_digits_image_text_pipelines():
    train, val, test, info = build_image_text_datasets(
        "digits", image_size=8, batch_size=16, channels=3, caption_templates=["the digit {word}", "number {digit}"]
    )
    batch = next(iter(train))
    assert batch["images"].shape == (16, 8, 8, 3) and batch["labels"].dtype.name == "int32"
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for label, caption in zip(batch["labels"].numpy(), batch["captions"].numpy()):
        assert caption.decode() in (f"the digit {words[label]}", f"number {label}")


def test_parse_spec_and_bad_specs(tmp_path):
    assert parse_spec(" DIGITS ") == ("digits", None)
    assert parse_spec("tfds:coco_captions/2014") == ("tfds", "coco_captions/2014")
    with pytest.raises(ValueError, match="Accepted forms: 'digits'.*'tfds:NAME'.*'folder:PATH'.*Did you mean 'digits'"):
        build_datasets("digit")
    with pytest.raises(ValueError, match=f"Did you mean 'folder:{tmp_path}'"):
        build_datasets(str(tmp_path))
    with pytest.raises(ValueError, match="Did you mean 'tfds:cifar10'"):
        parse_spec("cifar10")
    with pytest.raises(ValueError, match="missing a dataset name"):
        parse_spec("tfds:")
    with pytest.raises(ValueError, match="must be a string"):
        parse_spec(None)
    with pytest.raises(ValueError, match=r"\['data_dir'\] only apply to 'tfds:NAME'"):
        build_datasets("digits", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="test split is fixed"):
        build_datasets("digits", test_fraction=0.3)
    with pytest.raises(ValueError, match="validation_fraction"):
        build_datasets("digits", validation_fraction=-0.1)


@pytest.mark.single_backend
def test_a_resolved_source_stands_for_its_spec_and_is_not_resolved_again(caplog):
    """A command resolves its data once and passes the source on (e.g. `export`
    for int8 calibration and the accuracy check): one summary, the same info;
    options given with it must be those it was resolved with."""
    from keras_sparse_moe.data import resolve_dataset

    def summaries():
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("digits:")]

    with caplog.at_level(logging.INFO, logger="keras_sparse_moe"):
        source = resolve_dataset("digits", validation_fraction=0.2)
        ds, info = load_dataset(source, "test")
        datasets = build_datasets(source, batch_size=512, validation_fraction=0.2)
        assert len(summaries()) == 1 and info is source.info and datasets.info is source.info
        assert info.counts == {"train": 1150, "validation": 288, "test": 359}
        assert sum(int(y.shape[0]) for _, y in datasets.validation) == 288
        # A spec is resolved each time it is given.
        resolve_dataset("digits")
        assert len(summaries()) == 2
        with pytest.raises(ValueError, match=r"resolved with \{'validation_fraction': 0.2\}.*"
                                             r"received \{'validation_fraction': 0.3\}"):
            build_datasets(source, validation_fraction=0.3)
        # Labelled images cannot stand for image-text pairs; the converse holds.
        with pytest.raises(ValueError, match="need resolve_dataset\\(..., image_text=True\\)"):
            load_image_text_dataset(source, "test")
        pairs = resolve_dataset("digits", image_text=True)
        assert load_dataset(pairs, "test")[1].counts["test"] == 359
        assert build_image_text_datasets(pairs, batch_size=512).info is pairs.info
    # Messages name a source by its spec.
    assert repr(source) == "'digits'"


