"""Shared test setup: quiet TensorFlow logs, deterministic seeds, and the
small models of tests/configs.py built once per test process."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests compile hundreds of small XLA programs (JAX jits every train, test
# and predict step) on two CPU cores, where LLVM's optimisation of the
# generated code costs more time than it saves: level 0 makes the JAX leg
# about 20-25% faster (measured on tests/models and tests/recipes). Numerics
# differ at most by rounding (no fast-math at either level). Set the level in
# XLA_FLAGS to override.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
# On JAX most of those programs are single ops run eagerly (keras-hub's harness
# and the docstring examples call models op by op), each compiled on first
# use: XLA's CPU fusion emitters and LLVM's costlier passes make such a
# compile about a third slower (measured: a LIMoE backbone's first eager call
# 18 s -> 11 s; the JAX leg 918 s -> 710 s, one run each). TensorFlow, whose
# XLA compiles whole train steps, ran slower with these two flags: JAX only.
_FLAGS = os.environ["XLA_FLAGS"]
if os.environ.get("KERAS_BACKEND") == "jax" and "xla_cpu_use_fusion_emitters" not in _FLAGS:
    os.environ["XLA_FLAGS"] = (_FLAGS + " --xla_cpu_use_fusion_emitters=false"
                               " --xla_llvm_disable_expensive_passes=true")

# PyTorch runs each small op on all cores by default; with one xdist worker
# per core the workers' threads then fight over the cores: one thread each
# makes the PyTorch leg about a quarter faster (tests/layers and tests/models:
# 61 s -> 44 s). TensorFlow (no change measured) and JAX's XLA (twice as slow
# on one thread) keep their defaults.
if (os.environ.get("KERAS_BACKEND") == "torch"
        and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) >= (os.cpu_count() or 1)):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The command line's JAX compilation cache (keras_sparse_moe/utils/jax_cache.py)
# stays off in the tests that call `cli.main`: they write nothing outside
# pytest's temporary folders. tests/utils/test_jax_cache.py turns it on.
os.environ.setdefault("KERAS_SPARSE_MOE_JAX_CACHE", "off")

import shutil  # noqa: E402
import tempfile  # noqa: E402

# Many tests compile the same XLA programs: the same small models are built
# again and trained, evaluated and called eagerly op by op in several tests
# and in the command-line subprocesses. On JAX a compiled program is keyed by
# its function object, so a new model compiles again; JAX's persistent
# compilation cache is keyed by the program itself. The test session keeps one
# in a temporary folder, made by the first process that loads this file (the
# xdist workers and the subprocesses inherit its environment variable, so
# they share it): about a fifth less time on the JAX leg. It starts empty,
# so no result depends on an earlier run. A cache of the user's own
# (JAX_COMPILATION_CACHE_DIR) is left as it is.
_JAX_TEST_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_TEST_CACHE = tempfile.mkdtemp(prefix="ksm-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_TEST_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_unconfigure(config):
    if _JAX_TEST_CACHE is not None:
        shutil.rmtree(_JAX_TEST_CACHE, ignore_errors=True)


import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory):
    """Keep every temporary file the tests make under pytest's own basetemp.

    The docstring examples call ``tempfile.mkdtemp()`` and TensorFlow Datasets
    makes its own scratch folders; without this they piled up in /tmp (about
    2,000 folders per suite run). pytest keeps only its last three basetemps.
    Subprocesses (the command-line tests) inherit ``TMPDIR``.
    """
    directory = str(tmp_path_factory.mktemp("tmp"))
    old_tempdir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = directory
    os.environ["TMPDIR"] = directory
    yield
    tempfile.tempdir = old_tempdir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env


@pytest.fixture(autouse=True)
def _reset_state():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def backend():
    return keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    """Run `single_backend` tests once: under TensorFlow, or under the
    backend the marker names (`@pytest.mark.single_backend("torch")`).

    They test Python that does not depend on the Keras backend (argument
    parsing, file formats, error messages, the import graph, the mechanics
    of a command); running them under every backend would only repeat the
    same lines. Tests that train a few steps for the mechanics name PyTorch,
    which runs such short eager trainings several times faster (no graph to
    trace); tests that export in-process stay on TensorFlow.
    """
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("single_backend")
        if marker is None:
            continue
        runs_under = marker.args[0] if marker.args else "tensorflow"
        if runs_under != backend:
            item.add_marker(pytest.mark.skip(reason=f"backend-independent: runs under {runs_under}"))


# ---------------------------------------------------------- shared models
# Built once per test process (one per backend and xdist worker) from the
# configs of tests/configs.py. Tests that only read a model (shapes,
# predictions, save/load, export) share these instead of building their own;
# a test that trains or otherwise changes a model builds its own.
@pytest.fixture(scope="session")
def moe_vit_backbone():
    """A `MoEViTBackbone(**configs.MOE_VIT)` (read only)."""
    from keras_sparse_moe.models import MoEViTBackbone
    from tests import configs

    keras.utils.set_random_seed(0)
    return MoEViTBackbone(**configs.MOE_VIT)


@pytest.fixture(scope="session")
def limoe_backbone():
    """A `LIMoEBackbone(**configs.LIMOE)` (read only)."""
    from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
    from tests import configs

    keras.utils.set_random_seed(0)
    return LIMoEBackbone(**configs.LIMOE)


@pytest.fixture(scope="session")
def two_tower_backbone():
    """A `MoETwoTowerBackbone` of `configs.TWO_TOWER_VISION` and
    `configs.TEXT_ENCODER` towers (read only)."""
    from keras_sparse_moe.models import MoEViTBackbone
    from keras_sparse_moe.models.moe_dual_encoder import MoETextEncoder
    from keras_sparse_moe.models.moe_dual_encoder import MoETwoTowerBackbone
    from tests import configs

    keras.utils.set_random_seed(0)
    return MoETwoTowerBackbone(
        MoEViTBackbone(**configs.TWO_TOWER_VISION),
        MoETextEncoder(**configs.TEXT_ENCODER),
        embedding_dim=configs.TWO_TOWER_EMBEDDING_DIM,
    )


@pytest.fixture(scope="session")
def small_limoe_preset(tmp_path_factory):
    """A preset directory: `limoe_tiny` (its tokenizer and image converter)
    shrunk by `configs.LIMOE_PRESET_OVERRIDES`, with random weights (read
    only). Recipe and command-line tests train it instead of `limoe_tiny`:
    the same code paths at a fraction of the graph tracing and compile time."""
    from keras_sparse_moe.presets import from_preset
    from keras_sparse_moe.presets import save_to_preset
    from tests import configs

    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("small_limoe") / "preset")
    save_to_preset(from_preset("limoe_tiny", load_weights=False,
                               **configs.LIMOE_PRESET_OVERRIDES), path)
    return path
