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
                cases.append(pytest.param(test, id=test.name))
    return cases


def run_example(test):
    """Run one docstring example; fail with its output if any line differs."""
    if test.name.startswith(JAX_ONLY_PACKAGES) and keras.backend.backend() != "jax":
        pytest.skip("keras.distribution runs on the JAX backend only")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output = []
    runner.run(test, out=output.append, clear_globs=True)
    assert runner.failures == 0, "".join(output)
