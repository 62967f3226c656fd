"""A truncated or damaged artifact (preset weights or config, `.keras` file,
`.tflite` file) fails with one line naming the file and what is wrong, from
the Python API and the command line; atomic writes name the user's path."""

import os
import shutil
import tempfile
import zipfile

import keras
import pytest

from keras_sparse_moe.cli import main
from keras_sparse_moe.export import LiteRTModel
from keras_sparse_moe.export import export_litert
from keras_sparse_moe.presets import from_preset
from keras_sparse_moe.presets import save_to_preset
from keras_sparse_moe.utils.io import load_keras_file
from tests.configs import MOE_VIT_OVERRIDES

pytestmark = pytest.mark.single_backend


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny classifier as a preset directory and as a `.keras` file."""
    root = tmp_path_factory.mktemp("saved")
    model = from_preset("moe_vit_tiny", num_classes=10, **MOE_VIT_OVERRIDES)
    save_to_preset(model, str(root / "preset"))
    model.save(str(root / "model.keras"))
    return root


def _truncate(path):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def _cli_error(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("name", ["model.weights.h5", "task.weights.h5", "config.json"])
def test_a_preset_with_a_truncated_file_names_it(saved, tmp_path, capsys, name):
    preset = str(tmp_path / "preset")
    shutil.copytree(saved / "preset", preset)
    damaged = os.path.join(preset, name)
    _truncate(damaged)
    what = "not valid JSON" if name.endswith(".json") else r"truncated or corrupt \(truncated file"
    with pytest.raises(ValueError, match=rf"'{damaged}' (is )?{what}"):
        from_preset(preset)
    error = _cli_error(capsys, ["evaluate", "--model", preset, "--data", "digits"])
    assert damaged in error and "Traceback" not in error


def test_a_damaged_keras_file_is_named(saved, tmp_path, capsys):
    truncated = str(tmp_path / "truncated.keras")
    shutil.copyfile(saved / "model.keras", truncated)
    _truncate(truncated)
    with pytest.raises(ValueError, match="truncated.keras' is not a Keras model file"):
        load_keras_file(truncated)
    # A complete archive whose weights file was cut short when it was written.
    damaged = str(tmp_path / "damaged.keras")
    with zipfile.ZipFile(saved / "model.keras") as source, zipfile.ZipFile(damaged, "w") as out:
        for name in source.namelist():
            data = source.read(name)
            out.writestr(name, data[: len(data) // 2] if name.endswith(".h5") else data)
    message = rf"Keras model file '{damaged}' is damaged: its weights cannot be read \(truncated"
    with pytest.raises(ValueError, match=message):
        load_keras_file(damaged)
    error = _cli_error(capsys, ["evaluate", "--model", damaged, "--data", "digits"])
    assert damaged in error


def test_a_damaged_tflite_file_is_named(tmp_path):
    pytest.importorskip("ai_edge_litert")
    path = str(tmp_path / "model.tflite")
    with open(path, "wb") as handle:
        handle.write(b"\x1c\x00\x00\x00TFL3" + bytes(40))  # a header, then nothing
    with pytest.raises(ValueError, match=rf"LiteRT model '{path}' cannot be read \(.*\): it is "
                                         "truncated, damaged or not a .tflite file"):
        LiteRTModel(path)


def test_export_into_a_directory_that_refuses_files_names_the_users_path(tmp_path, monkeypatch):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = str(tmp_path / "model.tflite")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(str(tmp_path), ".tmp-x"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=rf"^Cannot write '{path}': Permission denied\.$"):
        export_litert(model, path)
    assert os.listdir(tmp_path) == []
