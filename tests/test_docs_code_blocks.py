"""Every Python block of README.md and docs/*.md runs.

The blocks of one file run in order in one fresh Python process (a later
block may use what an earlier one defined; nothing a block registers leaks
into the other tests), in a temporary working directory. The docs are
backend-agnostic and run once, under PyTorch (the fastest leg: no graph is
traced), except docs/export.md, which runs under TensorFlow: its exports run
in-process there instead of in a TensorFlow subprocess each. A block fenced as
```python sketch is not run: it outlines something that needs the network,
an accelerator or several hosts, minutes of training, or the reader's own
files (docs/architecture.md, "Code in the docs").
"""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.M | re.S)

# Runs the blocks of each FILE (argv[2:]) in order in one namespace per file,
# in a working directory of its own under argv[1] (with links to the
# repository's folders, so that paths from the repository root work), and writes
# {FILE: [seconds, error or None]} as JSON to argv[1]/results.json. One process
# for all files: Keras, keras-hub and the package are imported once.
_RUNNER = """
import json, os, sys, time, traceback
from tests.test_docs_code_blocks import python_blocks
root, results = sys.argv[1], {}
repository = os.getcwd()
for index, path in enumerate(sys.argv[2:]):
    cwd = os.path.join(root, str(index))
    os.makedirs(cwd)
    for name in ("benchmarks", "examples", "recipes", "tests", "tools"):  # paths from the root
        os.symlink(os.path.join(repository, name), os.path.join(cwd, name))
    os.chdir(cwd)
    namespace = {"__name__": "__docs__"}
    start, error = time.time(), None
    try:
        for line, code, sketch in python_blocks(path):
            if not sketch:
                exec(compile(code, f"{path}:{line}", "exec"), namespace)
    except BaseException:
        error = "\\n".join(traceback.format_exc().strip().splitlines()[-12:])
    results[path] = [time.time() - start, error]
with open(os.path.join(root, "results.json"), "w") as handle:
    json.dump(results, handle)
"""


def doc_files():
    docs = os.path.join(ROOT, "docs")
    return ["README.md"] + sorted(
        os.path.join("docs", name) for name in os.listdir(docs) if name.endswith(".md"))


def python_blocks(path):
    """[(line, code, is_sketch)] of the ```python blocks of `path` (relative
    to the repository root)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        text = handle.read()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group("code"), "sketch" in match.group("info").split()))
    return blocks


@pytest.mark.single_backend
def test_blocks_are_found_and_the_convention_is_documented():
    blocks = python_blocks("docs/models.md")
    assert len(blocks) >= 10 and blocks[0][0] == 18
    assert any(sketch for _, _, sketch in blocks)
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as handle:
        assert "```python sketch" in handle.read()


RUNNABLE = [p for p in doc_files() if any(not sketch for _, _, sketch in python_blocks(p))]
# The backend each file runs under (default: torch).
DOC_BACKEND = {os.path.join("docs", "export.md"): "tensorflow"}


def doc_backend(path):
    return DOC_BACKEND.get(path, "torch")


@pytest.fixture(scope="module")
def block_results(tmp_path_factory):
    """{file: [seconds, error or None]} of running every runnable file of
    this backend."""
    backend = keras.backend.backend()
    files = [path for path in RUNNABLE if doc_backend(path) == backend]
    root = str(tmp_path_factory.mktemp("docs"))
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _RUNNER, root, *files], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=1800)
    path = os.path.join(root, "results.json")
    assert os.path.isfile(path), "\n".join(result.stderr.strip().splitlines()[-12:])
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("path", [
    pytest.param(path, marks=pytest.mark.skipif(
        keras.backend.backend() != doc_backend(path),
        reason=f"{path} runs under KERAS_BACKEND={doc_backend(path)}"))
    for path in RUNNABLE
])
def test_python_blocks_run(path, block_results):
    seconds, error = block_results[path]
    assert error is None, error
