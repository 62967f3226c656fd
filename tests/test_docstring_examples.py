"""Every docstring Example in the package outside the model families runs
and prints what it says, on the backends tests/docstring_examples.py names (the model families:
tests/test_docstring_examples_models.py)."""

import pytest

from tests.docstring_examples import examples
from tests.docstring_examples import run_example

EXAMPLES = examples(models=False)


def test_the_package_has_examples():
    assert len(EXAMPLES) + len(examples(models=True)) >= 100


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example_runs(test):
    run_example(test)
