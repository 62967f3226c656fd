"""Expert parallelism over two JAX processes (the multi-host path).

Two processes on this machine (coordinator on 127.0.0.1, 4 simulated CPU
devices each, gloo collectives) train a small MoE-ViT with 8-way expert
parallelism spanning both, checkpoint it with `keras.callbacks.OrbaxCheckpoint`
and the checkpoint is reloaded in a single one-device process
(tests/distribution/mp_worker.py). JAX only.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "mp_worker.py")
TIMEOUT = 420


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, out_dir):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, WORKER, *args, str(out_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(proc):
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, (err or "")[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if keras.backend.backend() != "jax":
        pytest.skip("multi-process keras.distribution is implemented for JAX only")
    out = tmp_path_factory.mktemp("mp")
    port = str(free_port())
    # The one-process reference needs nothing from the two-process run: all
    # three run at once (the two training processes wait on each other).
    procs = [run(["train", str(i), port], out) for i in range(2)] + [run(["reference"], out)]
    for proc in procs:
        wait(proc)
    results = {}
    for name in ("train_0", "train_1", "reference"):
        with open(out / f"{name}.json") as f:
            results[name] = json.load(f)
    results["dir"] = out
    return results


@pytest.mark.slow
def test_two_processes_share_eight_devices(runs):
    for i in (0, 1):
        train = runs[f"train_{i}"]
        assert (train["processes"], train["devices"], train["local_devices"]) == (2, 8, 4)
    assert runs["reference"]["devices"] == 8


@pytest.mark.slow
def test_two_process_losses_equal_one_process(runs):
    reference = runs["reference"]["loss"]
    for i in (0, 1):
        np.testing.assert_allclose(runs[f"train_{i}"]["loss"], reference, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("orbax") is None,
                    reason="keras.callbacks.OrbaxCheckpoint needs `pip install orbax-checkpoint`")
def test_orbax_checkpoint_reloads_in_one_process(runs):
    assert runs["train_0"]["orbax"]
    wait(run(["reload"], runs["dir"]))
    with open(runs["dir"] / "reload.json") as f:
        reloaded = json.load(f)
    assert reloaded["devices"] == 1
    np.testing.assert_allclose(reloaded["predictions"], runs["train_0"]["predictions"],
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(runs["train_0"]["predictions"], runs["train_1"]["predictions"])
