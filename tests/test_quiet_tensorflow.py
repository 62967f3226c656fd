"""The command line hides TensorFlow's C++ start-up log lines, and only those."""

import os
import subprocess
import sys

import pytest

from keras_sparse_moe import _quiet_tensorflow

# Backend-independent (Python only): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend

# Lines TensorFlow 2.21 prints on import / first op on a CPU machine.
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795968843.286104    1266 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1795968843.286409    1266 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1795967146.891602   23118 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    # LiteRT's interpreter, at allocate_tensors().
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    "E0000 00:00:1795967149.215323   23118 kernel.cc:1] Out of memory while allocating",
    "/site-packages/foo.py:3: DeprecationWarning: bar is deprecated",
    "ValueError: bad input",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU. (and something else)",
]


def test_startup_lines_are_recognised_and_nothing_else():
    assert all(_quiet_tensorflow.is_startup_noise(line) for line in STARTUP)
    assert not any(_quiet_tensorflow.is_startup_noise(line) for line in KEPT)


def test_import_filtered_keeps_real_messages_in_order(tmp_path, monkeypatch, capfd):
    module = tmp_path / "noisy_native_module.py"
    text = "\n".join([STARTUP[0], KEPT[0], STARTUP[1], KEPT[1]]) + "\n"
    module.write_text(f"import os\nos.write(2, {text.encode()!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capfd.readouterr()
    _quiet_tensorflow.import_filtered("noisy_native_module")
    assert capfd.readouterr().err.splitlines() == [KEPT[0], KEPT[1]]


def test_quiet_stderr_writes_back_real_messages_also_when_the_block_raises(capfd):
    capfd.readouterr()
    try:
        with _quiet_tensorflow.quiet_stderr():
            os.write(2, f"{STARTUP[-1]}\n{KEPT[2]}\n".encode())
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert capfd.readouterr().err.splitlines() == [KEPT[2]]


def test_library_import_is_not_treated_as_the_command_line(capfd):
    assert not _quiet_tensorflow.is_cli_process()
    capfd.readouterr()
    with _quiet_tensorflow.quiet_if_cli():  # a library user's stderr is left alone
        os.write(2, (STARTUP[-1] + "\n").encode())
    assert capfd.readouterr().err.splitlines() == [STARTUP[-1]]


# Runs an exported model the way the command line does (the script's name
# makes it the command-line process): converts a one-op model, then runs it.
LITERT_PROBE = """
import numpy as np, tensorflow as tf
from keras_sparse_moe.export.litert import LiteRTModel
fn = tf.function(lambda x: tf.nn.relu(x), autograph=False)
flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions(
    [fn.get_concrete_function(tf.TensorSpec((1, 4), tf.float32))], fn).convert()
open("probe.tflite", "wb").write(flatbuffer)
print(LiteRTModel("probe.tflite")(np.ones((1, 4), "float32")).tolist())
"""


def test_command_line_hides_the_litert_delegate_line(tmp_path):
    script = tmp_path / "keras-sparse-moe-litert-probe"
    script.write_text(LITERT_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = [sys.executable, str(script)]
    # The two runs overlap to save wall time.
    procs = [subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=environment, cwd=tmp_path)
             for environment in (env, dict(env, TF_CPP_MIN_LOG_LEVEL="0"))]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    quiet, loud = (subprocess.CompletedProcess(run, proc.returncode, *output)
                   for proc, output in zip(procs, outputs))
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stdout.strip() == loud.stdout.strip() == "[[1.0, 1.0, 1.0, 1.0]]"
    assert STARTUP[-1] in loud.stderr.splitlines()  # the line exists ...
    assert STARTUP[-1] not in quiet.stderr.splitlines()  # ... and the CLI hides it


def test_command_line_stderr_has_no_tensorflow_startup_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "keras_sparse_moe.cli", "train", "--epochs",
                             "ten"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "keras-sparse-moe train: error: argument --epochs: invalid int value: 'ten' "
        "(see 'keras-sparse-moe train --help')"
    ]
