"""Runs a worker script on 8 simulated JAX devices (a fresh process: the
device count is fixed when JAX starts) and returns the JSON it writes."""

import json
import os
import subprocess
import sys

import keras
import pytest


def run_eight_device_worker(worker, tmp_path_factory, timeout):
    """Run `tests/distribution/<worker>` with the path of a results file and
    return its results (skipped unless the backend is JAX)."""
    if keras.backend.backend() != "jax":
        pytest.skip("multi-device checks need KERAS_BACKEND=jax (keras.distribution)")
    out = tmp_path_factory.mktemp(os.path.splitext(worker)[0]) / "results.json"
    script = os.path.join(os.path.dirname(__file__), worker)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, script, str(out)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        results = json.load(f)
    assert results["device_count"] == 8
    return results
