"""The command line's JAX persistent compilation cache."""

import os
import subprocess
import sys

import keras
import pytest

from keras_sparse_moe.utils.jax_cache import CACHE_VARIABLE
from keras_sparse_moe.utils.jax_cache import cache_directory

SCRIPT = r"""
import sys
import jax, keras
from keras_sparse_moe.cli import main
assert main(["presets", "--family", "moe_vit"]) == 0
print("cache:", jax.config.jax_compilation_cache_dir)
print(float(keras.ops.sum(keras.random.normal((3, 5), seed=1) * 0)))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX cache")
def test_the_command_line_keeps_compiled_programs_on_disk(tmp_path):
    directory = tmp_path / "jax-cache"
    env = dict(os.environ, KERAS_BACKEND="jax", **{CACHE_VARIABLE: str(directory)})
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the test session's own (tests/conftest.py)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"cache: {directory}" in result.stdout
    # The programs compiled after the command started are on disk for the next one.
    assert any(name.startswith("jit_") for name in os.listdir(directory))


@pytest.mark.single_backend
def test_cache_directory_follows_the_environment(tmp_path):
    assert cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == os.path.join(
        str(tmp_path), "keras_sparse_moe", "jax")
    assert cache_directory({CACHE_VARIABLE: "off"}) is None
    assert cache_directory({CACHE_VARIABLE: str(tmp_path / "c")}) == str(tmp_path / "c")
