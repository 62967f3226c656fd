"""The same fixed-weight SparseMoE models give the same outputs on TensorFlow,
JAX and PyTorch (each backend in its own subprocess)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "cross_backend_worker.py")
BACKENDS = ("tensorflow", "jax", "torch")


@pytest.mark.slow
def test_backends_agree_on_fixed_weight_models(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs once, from the tensorflow backend run")
    procs = {}
    for backend in BACKENDS:  # the three runs overlap to save wall time
        env = dict(os.environ, KERAS_BACKEND=backend)
        procs[backend] = subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / f"{backend}.npz")], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
    results = {}
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
