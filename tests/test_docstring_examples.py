"""Every docstring Example in the package runs and prints what it says, on
the current backend (keras and keras-hub convention: examples are code)."""

import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_sparse_moe

# keras.distribution is implemented for JAX only: these examples say so and
# run there.
JAX_ONLY_PACKAGES = ("keras_sparse_moe.distribution",)


def _modules():
    names = [keras_sparse_moe.__name__]
    for info in pkgutil.walk_packages(keras_sparse_moe.__path__, prefix="keras_sparse_moe."):
        names.append(info.name)
    return sorted(names)


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in _modules():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if test.examples and test.name.startswith(name):
                cases.append(pytest.param(test, id=test.name))
    return cases


EXAMPLES = _examples()


def test_the_package_has_examples():
    assert len(EXAMPLES) >= 100


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example_runs(test):
    if test.name.startswith(JAX_ONLY_PACKAGES) and keras.backend.backend() != "jax":
        pytest.skip("keras.distribution runs on the JAX backend only")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output = []
    runner.run(test, out=output.append, clear_globs=True)
    assert runner.failures == 0, "".join(output)
