"""One run at a time in an output directory: `run.lock`, its holder, stale
locks, and what an interrupted run leaves half-done."""

import json
import os
import socket
import subprocess
import sys

import pytest

from keras_sparse_moe.cli import main
from keras_sparse_moe.recipes import run_lock
from keras_sparse_moe.recipes import train
from keras_sparse_moe.recipes.classifier import train_classifier
from keras_sparse_moe.recipes.config import TrainingConfig
from keras_sparse_moe.recipes.run_lock import RunDirectoryLocked
from keras_sparse_moe.recipes.run_lock import RunLock
from keras_sparse_moe.recipes.run_lock import remove_stale_files
from keras_sparse_moe.utils.io import write_json

pytestmark = pytest.mark.single_backend

CONFIG = TrainingConfig(epochs=1, max_batches=1)
HOST = socket.gethostname()
# A process that holds the lock until its stdin closes, importing only the
# lock module (not Keras).
HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with module.RunLock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run_lock.__file__, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield process.pid
    process.stdin.close()
    process.wait(timeout=60)


def _ended_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, held_by_another_process):
    pid = held_by_another_process
    holder = rf"in use by another run \(PID {pid} on host {HOST}, started .*\); wait for it"
    with pytest.raises(RunDirectoryLocked, match=holder):
        train_classifier("moe_vit_tiny", "digits", str(tmp_path), CONFIG)
    with pytest.raises(RunDirectoryLocked, match=holder):  # ksm.train, a dual encoder
        train("limoe_tiny", "digits", CONFIG, str(tmp_path))
    assert os.listdir(tmp_path) == ["run.lock"]  # nothing of the live run touched


def test_the_cli_gives_one_line_naming_the_holder(tmp_path, capsys, held_by_another_process):
    code = main(["train", "--preset", "moe_vit_tiny", "--data", "digits", "--output",
                 str(tmp_path), "--epochs", "1"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert f"in use by another run (PID {held_by_another_process} on host {HOST}" in error[0]
    assert error[0].startswith("keras-sparse-moe train: error: Output directory")


def test_the_lock_is_released_when_the_holder_ends(tmp_path):
    with RunLock(tmp_path) as lock:
        record = json.load(open(lock.path))
        assert (record["pid"], record["host"]) == (os.getpid(), HOST)
        with pytest.raises(RunDirectoryLocked, match=f"PID {os.getpid()} on host"):
            RunLock(tmp_path).acquire()
    assert not os.path.exists(tmp_path / "run.lock")
    with RunLock(tmp_path):
        pass


def test_a_stale_lock_of_an_ended_process_is_taken_over(tmp_path):
    stale = {"pid": _ended_pid(), "host": HOST, "started": "2026-01-01T00:00:00+00:00"}
    write_json(str(tmp_path / "run.lock"), stale)
    with RunLock(tmp_path) as lock:
        assert json.load(open(lock.path))["pid"] == os.getpid()


@pytest.mark.parametrize("holder, taken_over", [
    ("ended", True), ("alive", False), ("other host", False)])
def test_without_fcntl_the_lock_file_is_created_exclusively(tmp_path, monkeypatch, holder,
                                                            taken_over):
    monkeypatch.setattr(run_lock, "fcntl", None)
    record = {
        "ended": {"pid": _ended_pid(), "host": HOST},
        "alive": {"pid": os.getpid(), "host": HOST},
        "other host": {"pid": 1, "host": HOST + "-elsewhere"},
    }[holder]
    write_json(str(tmp_path / "run.lock"), record)
    if taken_over:
        with RunLock(tmp_path) as lock:
            assert json.load(open(lock.path))["pid"] == os.getpid()
        assert not os.path.exists(tmp_path / "run.lock")
    else:
        with pytest.raises(RunDirectoryLocked, match=f"PID {record['pid']} on host"):
            RunLock(tmp_path).acquire()
        assert json.load(open(tmp_path / "run.lock")) == record
    (tmp_path / "fresh").mkdir()
    with RunLock(tmp_path / "fresh"):  # no lock file yet
        pass


def test_a_failed_start_leaves_no_directory_and_no_lock(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="Accepted forms"):
        train_classifier("moe_vit_tiny", "mnist", str(out), CONFIG)
    assert not out.exists()


def test_stale_temporary_files_are_removed(tmp_path):
    # (Uncommitted log rows are dropped by the CSV logger when the run resumes:
    # test_checkpoints.test_crash_while_saving_leaves_the_previous_epoch_loadable.)
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "epoch_2.keras").write_text("a committed checkpoint")
    write_json(str(backup / "state.json"), {"epoch": 2, "checkpoint": "epoch_2.keras"})
    for name in (".tmp-abc.keras", "backup/.tmp-def.keras"):
        (tmp_path / name).write_text("half written")
    (tmp_path / ".tmp-preset-x").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    remove_stale_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["backup", "notes.txt"]
    assert sorted(os.listdir(backup)) == ["epoch_2.keras", "state.json"]


def test_a_finished_run_called_again_removes_stale_files(tmp_path):
    settings = {"preset": "moe_vit_tiny", "data": "digits", **CONFIG.to_dict(), "overrides": {},
                "load_weights": True, "data_options": {}}
    write_json(str(tmp_path / "run.json"), {"status": "finished", "settings": settings})
    write_json(str(tmp_path / "metrics.json"), {"accuracy": 0.5})
    (tmp_path / ".tmp-abc.keras").write_text("half written")
    assert train_classifier("moe_vit_tiny", "digits", str(tmp_path), CONFIG) == {"accuracy": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "run.json"]
