"""Collects and runs the package's docstring Examples (keras and keras-hub
convention: examples are code). The examples are split over two test files,
tests/test_docstring_examples.py and tests/test_docstring_examples_models.py
(the model families, about half the time), so that pytest-xdist, which keeps
a file on one worker, can run the halves in parallel."""

import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_sparse_moe

# keras.distribution is implemented for JAX only: these examples say so and
# run there.
JAX_ONLY_PACKAGES = ("keras_sparse_moe.distribution",)
# Examples of the parts above the models (data, presets, training recipes,
# export, conversion, profiling, the command line) run once: what they show
# does not depend on the backend, and tests/recipes, tests/export and
# tests/convert run those paths on every backend. They run under TensorFlow,
# the training recipes' under PyTorch (short eager trainings, several times
# faster there). The layers' and models' examples run under TensorFlow and PyTorch
# (JAX_SKIP_REASON below).
SINGLE_BACKEND_PACKAGES = tuple(
    "keras_sparse_moe." + name
    for name in ("_cli_backend", "_quiet_tensorflow", "callbacks", "cli", "convert", "data", "export", "presets", "profile",
                 "profiling", "recipes", "utils")
)
UNDER_TORCH_PACKAGES = ("keras_sparse_moe.recipes",)
# Under JAX an eager call compiles each of its ops on first use, so an example
# that builds and calls a small model costs 3-15 s there (a fraction of a
# second under PyTorch): the examples of the layers and models, which are
# backend-agnostic code, run under TensorFlow and PyTorch. On JAX the same
# layers and models go through keras-hub's harness and the behaviour tests
# (tests/harness, tests/layers, tests/models), and the keras.distribution
# examples run there only.
JAX_SKIP_REASON = ("docstring examples run under TensorFlow and PyTorch; on JAX the "
                   "harness and behaviour tests run the same layers and models")
MODELS_PACKAGE = "keras_sparse_moe.models"


def _modules():
    names = [keras_sparse_moe.__name__]
    for info in pkgutil.walk_packages(keras_sparse_moe.__path__, prefix="keras_sparse_moe."):
        names.append(info.name)
    return sorted(names)


def examples(models):
    """pytest params of the docstring examples of the model families
    (`models=True`) or of every other module (`models=False`)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in _modules():
        if name.endswith("__main__"):
            continue
        in_models = name == MODELS_PACKAGE or name.startswith(MODELS_PACKAGE + ".")
        if in_models != models:
            continue
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if test.examples and test.name.startswith(name):
                marks = ()
                if _in(name, UNDER_TORCH_PACKAGES):
                    marks = (pytest.mark.single_backend("torch"),)
                elif _in(name, SINGLE_BACKEND_PACKAGES):
                    marks = (pytest.mark.single_backend,)
                cases.append(pytest.param(test, id=test.name, marks=marks))
    return cases


def _in(module_name, packages):
    return any(module_name == p or module_name.startswith(p + ".") for p in packages)


def run_example(test):
    """Run one docstring example; fail with its output if any line differs."""
    backend = keras.backend.backend()
    if test.name.startswith(JAX_ONLY_PACKAGES):
        if backend != "jax":
            pytest.skip("keras.distribution runs on the JAX backend only")
    elif backend == "jax":
        pytest.skip(JAX_SKIP_REASON)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output = []
    runner.run(test, out=output.append, clear_globs=True)
    assert runner.failures == 0, "".join(output)
