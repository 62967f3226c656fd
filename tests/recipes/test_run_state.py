"""The state of a recipe's output directory: fresh, resume, finished, refused."""

import json
import os

import pytest

from keras_sparse_moe.recipes.run_state import check_previous_run
from keras_sparse_moe.utils.io import read_json
from keras_sparse_moe.utils.io import write_json

# Backend-independent (Python only): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend

KEYS = ("epochs", "seed")
SETTINGS = {"epochs": 3, "seed": 0, "verbose": 2}


def _run(directory, status, settings=SETTINGS, metrics=True, backup=False):
    write_json(os.path.join(directory, "run.json"), {"status": status, "settings": settings})
    if metrics:
        write_json(os.path.join(directory, "metrics.json"), {"accuracy": 0.5})
    if backup:
        os.makedirs(os.path.join(directory, "backup"))


def _state(directory, settings=SETTINGS, **kwargs):
    return check_previous_run(str(directory), settings, keys=KEYS, **kwargs)


def test_empty_or_missing_directory_is_fresh(tmp_path):
    assert _state(tmp_path) == "fresh"
    assert _state(tmp_path / "not_yet") == "fresh"


def test_interrupted_run_resumes_and_finished_run_is_reused(tmp_path):
    _run(tmp_path, "running", metrics=False, backup=True)
    assert _state(tmp_path) == "resume"
    # Settings outside `keys` (here verbosity) may change.
    assert _state(tmp_path, dict(SETTINGS, verbose=0)) == "resume"
    finished = tmp_path / "finished"
    finished.mkdir()
    _run(finished, "finished")
    assert _state(finished) == "finished"


def test_finished_run_without_metrics_trains_again(tmp_path):
    _run(tmp_path, "finished", metrics=False)
    assert _state(tmp_path) == "fresh"


def test_backup_without_run_file_resumes(tmp_path):
    os.makedirs(tmp_path / "backup")
    assert _state(tmp_path) == "resume"
    (tmp_path / "run.json").write_text("{not json")
    assert _state(tmp_path) == "resume"  # an unreadable run.json is no run.json


@pytest.mark.parametrize("status, what", [("finished", "a finished"), ("running", "an interrupted")])
def test_different_settings_are_refused_with_the_changes(tmp_path, status, what):
    _run(tmp_path, status, backup=status == "running")
    with pytest.raises(ValueError, match=rf"holds {what} run with different settings "
                                         r"\(epochs: 3 -> 5, seed: 0 -> 1\).*overwrite"):
        _state(tmp_path, {"epochs": 5, "seed": 1})


def test_older_run_files_use_the_defaults_for_keys_they_lack(tmp_path):
    _run(tmp_path, "finished", settings={"epochs": 3})
    assert _state(tmp_path, defaults={"seed": 0}) == "finished"
    with pytest.raises(ValueError, match="seed: None -> 0"):
        _state(tmp_path)


def test_overwrite_deletes_only_the_run_files(tmp_path):
    _run(tmp_path, "finished", backup=True)
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.0\n")
    (tmp_path / "notes.txt").write_text("mine")
    assert _state(tmp_path, {"epochs": 5, "seed": 1}, overwrite=True) == "fresh"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_json_round_trip_is_atomic_and_tolerant(tmp_path):
    path = str(tmp_path / "x.json")
    write_json(path, {"a": [1, 2]})
    assert read_json(path) == {"a": [1, 2]} == json.load(open(path))
    assert [name for name in os.listdir(tmp_path) if name != "x.json"] == []  # no temp files
    assert read_json(str(tmp_path / "missing.json")) is None
