"""The backends an export test runs on.

Exports from JAX and from PyTorch take one path: `export_litert` saves the
model to a `.keras` file and a TensorFlow-backend subprocess converts it.
What depends on the backend before that is the saved model, which the core
parity tests check on JAX (tests/export/test_litert.py, test_towers.py).
Tests of what the subprocess does with it (quantization, raw-image inputs,
error messages, converted checkpoints) run on TensorFlow (in-process) and
PyTorch (the subprocess), not a second time on JAX.
"""

import keras
import pytest

not_repeated_on_jax = pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX exports through the same TensorFlow subprocess as PyTorch, which runs this test",
)
