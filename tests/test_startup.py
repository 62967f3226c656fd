"""Start-up cost: `keras-sparse-moe --help` and argument errors answer without
importing Keras or TensorFlow, and `import keras_sparse_moe` adds little to
`import keras_hub` (which it builds on)."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("keras", "tensorflow", "jax", "torch", "keras_hub")


def _cli_imports(*args):
    """(return code, stderr without import lines, top-level modules imported)
    of `python -X importtime -m keras_sparse_moe.cli ARGS`."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_sparse_moe.cli",
                             *args], env=env, capture_output=True, text=True, timeout=120)
    modules, other = set(), []
    for line in result.stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            other.append(line)
    return result.returncode, other, modules


@pytest.mark.single_backend
@pytest.mark.parametrize("args", [
    ("--help",), ("train", "--help"), ("evaluate", "--help"), ("--version",),
])
def test_help_answers_without_importing_keras(args):
    code, stderr, modules = _cli_imports(*args)
    assert code == 0, stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.single_backend
@pytest.mark.parametrize("args, message", [
    (("train", "--epochs", "0"), "--epochs must be >= 1; received 0"),
    (("train", "--epochs", "ten"), "invalid int value: 'ten'"),
    (("evaluate",), "the following arguments are required: --model"),
    (("export", "--model", "m", "--output", "x.tflite", "--quantization", "int4"),
     "invalid choice: 'int4'"),
    (("bogus",), "invalid choice: 'bogus'"),
])
def test_argument_errors_answer_without_importing_keras(args, message):
    code, stderr, modules = _cli_imports(*args)
    errors = [line for line in stderr if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.single_backend
def test_the_cli_augmentation_choices_are_the_recipes():
    from keras_sparse_moe.cli import AUGMENTATIONS
    from keras_sparse_moe.recipes.augment import AUGMENTATIONS as RECIPE_AUGMENTATIONS

    assert AUGMENTATIONS == RECIPE_AUGMENTATIONS


_TIMING = """
import json, sys, time
start = time.perf_counter()
import keras_hub
hub = time.perf_counter() - start
before = set(sys.modules)
start = time.perf_counter()
import keras_sparse_moe
extra = time.perf_counter() - start
added = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"hub": hub, "extra": extra, "added": added}))
"""


def test_import_adds_little_to_keras_hub():
    """`import keras_sparse_moe` costs at most 0.5 s more than `import
    keras_hub` on the same backend (a tenth of keras_hub's own import on a
    loaded machine), and imports no heavy optional dependency (TFDS, the
    LiteRT interpreter): those load when a feature needs them."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _TIMING], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    assert timing["added"] == ["keras_sparse_moe"], timing["added"]
    assert timing["extra"] < max(0.5, timing["hub"] / 10), timing
