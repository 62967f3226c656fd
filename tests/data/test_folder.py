"""`folder:PATH` sources: class folders, deterministic splits, unreadable
files skipped with a warning, mixed sizes resized, captions files."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import build_image_text_datasets
from keras_sparse_moe.data import load_dataset
from keras_sparse_moe.data import read_captions_file

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend

CLASSES = ("circle", "square", "triangle")


def _save(path, value, size=(10, 12), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def _make_folder(root, per_class=6, mode="RGB"):
    """Each image is one flat color whose red value identifies it."""
    values = {}
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            value = 10 + 40 * c + 5 * i
            size = (10, 12) if i % 2 else (16, 9)  # mixed sizes
            ext = ".png" if i % 3 else ".BMP"
            path = os.path.join(root, name, f"img_{i}{ext}")
            _save(path, value, size, mode)
            values[os.path.relpath(path, root)] = (value, c)
    with open(os.path.join(root, "circle", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    good = os.path.join(root, "triangle", "truncated.png")
    _save(good, 1, (32, 32))
    with open(good, "rb") as f:
        data = f.read()
    with open(good, "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(root, "square", "notes.txt"), "w") as f:
        f.write("not an image, ignored")
    return values


def _identities(spec, split, **options):
    ds, info = load_dataset(spec, split, **options)
    return [(int(round(float(image.numpy()[0, 0, 0]))), int(label)) for image, label in ds], info


def test_splits_are_stratified_disjoint_and_complete(tmp_path):
    values = _make_folder(str(tmp_path))
    spec = f"folder:{tmp_path}"
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image file\(s\).*broken.png.*truncated.png"):
        train, info = _identities(spec, "train")
    assert info.class_names == CLASSES and info.num_classes == 3
    assert info.counts == {"train": 12, "validation": 3, "test": 3}
    assert info.image_shape == (None, None, 3)
    with pytest.warns(UserWarning):
        val, _ = _identities(spec, "validation")
    with pytest.warns(UserWarning):
        test, _ = _identities(spec, "test")
    found = train + val + test
    assert sorted(found) == sorted(values.values())  # every readable image once
    assert sorted(label for _, label in test) == [0, 1, 2]  # one per class
    with pytest.warns(UserWarning):
        again, _ = _identities(spec, "test")
    assert again == test  # deterministic


def test_build_datasets_resizes_mixed_sizes(tmp_path):
    _make_folder(str(tmp_path))
    spec = f"folder:{tmp_path}"
    with pytest.warns(UserWarning, match="unreadable"):
        train, val, test, info = build_datasets(spec, image_size=(8, 6), batch_size=4, channels=1)
    images, labels = next(iter(train))
    assert images.shape == (4, 8, 6, 1) and labels.dtype.name == "int32"
    assert float(np.max(images)) <= 1.0
    assert sum(int(b[1].shape[0]) for b in test) == info.counts["test"]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="mixed sizes"):
        build_datasets(spec, image_size=None)


def test_explicit_split_folders_and_grayscale(tmp_path):
    for split, n in (("train", 5), ("test", 2)):
        for c, name in enumerate(CLASSES[:2]):
            for i in range(n):
                ext = ".jpg" if i == 0 else ".png"
                _save(os.path.join(tmp_path, split, name, f"{i}{ext}"), 20 * c + i, (8, 8), "L")
    train, val, test, info = build_datasets(f"folder:{tmp_path}", batch_size=2)
    assert info.class_names == CLASSES[:2]
    assert info.counts == {"train": 8, "validation": 2, "test": 4}
    assert info.image_shape == (8, 8, 1)
    assert "test/ folder" in info.splits["test"]
    images, _ = next(iter(test))
    assert images.shape == (2, 8, 8, 1)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_datasets(f"folder:{tmp_path / 'missing'}")
    _save(os.path.join(tmp_path, "loose.png"), 3)
    with pytest.raises(ValueError, match="no class sub-folders.*needs labels"):
        build_datasets(f"folder:{tmp_path}")
    os.makedirs(tmp_path / "empty_class")
    with pytest.raises(ValueError, match="no image"):
        build_datasets(f"folder:{tmp_path}")


def test_captions_file_pairs(tmp_path):
    root = str(tmp_path)
    lines = ["# relative path <TAB> caption"]
    for i in range(10):
        _save(os.path.join(root, "pics", f"{i}.png"), 10 * i, (6, 6))
        lines.append(f"pics/{i}.png\ta flat color number {i}")
        lines.append(f"pics/{i}.png\tanother caption of {i}")
    lines.append("pics/missing.png\tgone")
    with open(os.path.join(root, "captions.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="do not exist"):
        train, val, test, info = build_image_text_datasets(f"folder:{root}", image_size=4, batch_size=2)
    assert info.class_names is None
    assert sum(info.counts.values()) == 10 and info.counts["test"] == 2
    batch = next(iter(test))
    assert sorted(batch) == ["captions", "images"]
    for image, caption in zip(batch["images"].numpy(), batch["captions"].numpy()):
        number = int(caption.decode().rsplit(" ", 1)[1])
        assert caption.decode() == f"a flat color number {number}"  # evaluation: first caption
        assert abs(image[0, 0, 0] * 255 - 10 * number) < 1.0
    assert read_captions_file(os.path.join(root, "captions.tsv"))["pics/3.png"] == [
        "a flat color number 3", "another caption of 3",
    ]
    with open(os.path.join(root, "bad.tsv"), "w") as f:
        f.write("pics/1.png a caption without a tab\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: .*no tab"):
        build_image_text_datasets(f"folder:{root}", image_size=4, captions_file=os.path.join(root, "bad.tsv"))


def test_class_folder_without_captions_file_uses_class_templates(tmp_path):
    _make_folder(str(tmp_path), per_class=3)
    with pytest.warns(UserWarning):
        _, _, test, info = build_image_text_datasets(
            f"folder:{tmp_path}", image_size=4, batch_size=8, caption_templates=["a picture of a {}"]
        )
    batch = next(iter(test))
    names = [CLASSES[i] for i in batch["labels"].numpy()]
    assert [c.decode() for c in batch["captions"].numpy()] == [f"a picture of a {n}" for n in names]
    assert info.zero_shot_prompts(["a {}"]) == [["a circle"], ["a square"], ["a triangle"]]


def _classes(root, counts):
    for name, count in counts.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(count):
            _save(os.path.join(root, name, f"{i}.png"), 10 * i, (6, 6))


@pytest.mark.single_backend
def test_empty_class_folder_and_single_class_are_errors_naming_the_folder(tmp_path):
    _classes(tmp_path, {"cat": 6, "dog": 6, "empty": 0})
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=rf"Class folder '{tmp_path / 'empty'}' has no readable image"):
        build_datasets(f"folder:{tmp_path}")
    single = tmp_path / "single"
    _classes(single, {"cat": 6})
    with pytest.raises(ValueError, match=rf"Image folder '{single}' has a single class folder \('cat'\)"):
        build_datasets(f"folder:{single}")


@pytest.mark.single_backend
def test_classes_with_fewer_than_five_images_warn(tmp_path):
    _classes(tmp_path, {"cat": 6, "dog": 2})
    with pytest.warns(UserWarning, match=r"1 class\(es\) with fewer than 5 images: dog \(2\)"):
        build_datasets(f"folder:{tmp_path}", batch_size=2)
