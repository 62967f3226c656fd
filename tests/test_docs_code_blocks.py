"""Every Python block of README.md and docs/*.md runs.

The blocks of one file run in order in one fresh Python process (a later
block may use what an earlier one defined; nothing a block registers leaks
into the other tests), in a temporary working directory. A block fenced as
```python sketch is not run: it outlines something that needs the network,
an accelerator or several hosts, minutes of training, or the reader's own
files (docs/architecture.md, "Code in the docs").
"""

import os
import re
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.M | re.S)

# Runs each block of FILE (argv[1]) in one namespace; a failure names FILE:LINE.
_RUNNER = """
import sys
from tests.test_docs_code_blocks import python_blocks
namespace = {"__name__": "__docs__"}
for line, code, sketch in python_blocks(sys.argv[1]):  # noqa
    if not sketch:
        exec(compile(code, f"{sys.argv[1]}:{line}", "exec"), namespace)
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


@pytest.mark.single_backend
@pytest.mark.parametrize("path", [p for p in doc_files()
                                  if any(not sketch for _, _, sketch in python_blocks(p))])
def test_python_blocks_run(path, tmp_path):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _RUNNER, path], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, "\n".join(result.stderr.strip().splitlines()[-12:])
