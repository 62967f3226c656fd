"""Every docstring Example of the model families (keras_sparse_moe.models)
runs and prints what it says, under TensorFlow and PyTorch (a file of its own so
that it runs beside tests/test_docstring_examples.py)."""

import pytest

from tests.docstring_examples import examples
from tests.docstring_examples import run_example

EXAMPLES = examples(models=True)


def test_the_model_families_have_examples():
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example_runs(test):
    run_example(test)
