"""The same fixed-weight SparseMoE models give the same outputs on TensorFlow,
JAX and PyTorch (TensorFlow in the test process, JAX and PyTorch each in its
own subprocess)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.layers.cross_backend_worker import run_all

WORKER = os.path.join(os.path.dirname(__file__), "cross_backend_worker.py")


@pytest.mark.slow
def test_backends_agree_on_fixed_weight_models(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs once, from the tensorflow backend run")
    procs = {}
    for backend in ("jax", "torch"):  # the two runs overlap to save wall time
        env = dict(os.environ, KERAS_BACKEND=backend)
        procs[backend] = subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / f"{backend}.npz")], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
    results = {"tensorflow": run_all()}  # meanwhile, in this (tensorflow) process
    for backend, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{backend} failed:\n{stderr[-3000:]}"
        with np.load(tmp_path / f"{backend}.npz") as data:
            assert str(data["backend"]) == backend
            results[backend] = {k: data[k] for k in data.files if k != "backend"}
    reference = results["tensorflow"]
    cases = [k for k in reference if k != "x"]
    assert len(cases) == 4
    for backend in ("jax", "torch"):
        for case in cases:
            a, b = reference[case], results[backend][case]
            assert a.shape == (3, 8, 6) and np.all(np.isfinite(a))
            assert np.abs(a).max() > 0.1
            diff = float(np.max(np.abs(a - b)))
            assert diff <= 1e-5, f"{case}: tensorflow vs {backend} max abs diff {diff}"
