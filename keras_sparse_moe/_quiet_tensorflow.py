"""Quiet TensorFlow start-up for the `keras-sparse-moe` command line.

Importing TensorFlow prints C++ log lines to the process's stderr, for
example "WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR", oneDNN and "Could not find cuda drivers" notes, CPU
instruction hints and, at the first op, "failed call to cuInit". They are
written before TensorFlow reads `TF_CPP_MIN_LOG_LEVEL`, so setting that
variable does not hide them. On the command line they bury the output, and
an "E0000 ... cuInit" line on a CPU machine looks like a failure.

For the command-line process only (the library never changes logging on
import), `import_tensorflow_quietly` sets `TF_CPP_MIN_LOG_LEVEL=3` unless the
user set it, and imports TensorFlow with file descriptor 2 pointing at a
temporary file; afterwards it writes back every captured line except the
start-up notes above. `TF_CPP_MIN_LOG_LEVEL=0` shows everything. The same
filter (`quiet_stderr`) hides the LiteRT interpreter's "INFO: Created
TensorFlow Lite XNNPACK delegate for CPU." when the command line runs an
exported model.
"""

import contextlib
import os
import re
import sys
import tempfile

# absl-formatted INFO / WARNING lines ("I0000 00:00:1795968843.286104 1266
# port.cc:153] ..."), absl's pre-initialisation banner, the continuation line
# of the CPU instruction hint, CUDA probing errors on machines without a GPU,
# the LiteRT interpreter's XNNPACK note and the int8 calibrator's settings line.
_NOISE = re.compile(
    r"^(?:"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
    r"|E\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] .*(?:cuInit|CUDA|cuda)"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: "
    r")"
)


def is_startup_noise(line):
    """Whether `line` is one of TensorFlow's C++ start-up log lines.

    Example:
    >>> is_startup_noise("I0000 00:00:1795968843.286409    1266 cudart_stub.cc:31] "
    ...                  "Could not find cuda drivers on your machine, GPU will not be used.")
    True
    >>> is_startup_noise("ValueError: bad input")
    False
    """
    return bool(_NOISE.match(line))


def is_cli_process():
    """Whether this process runs the `keras-sparse-moe` command line."""
    if os.path.basename(sys.argv[0] if sys.argv else "").startswith("keras-sparse-moe"):
        return True
    argv = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            return argv[i + 1] in ("keras_sparse_moe.cli", "keras_sparse_moe")
    return False


def import_tensorflow_quietly():
    """Import TensorFlow, dropping its C++ start-up log lines from stderr.

    Does nothing if TensorFlow is already imported; `TF_CPP_MIN_LOG_LEVEL=0`
    imports it without filtering. Lines that are not start-up notes (a
    Python warning, a real error) are written to stderr after the import,
    in their order.
    """
    if "tensorflow" in sys.modules:
        return
    if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3") == "0":
        import tensorflow  # noqa: F401

        return
    import_filtered("tensorflow")


def import_filtered(module):
    """Import `module` with file descriptor 2 captured; write back the lines
    that are not start-up noise (also when the import fails)."""
    import importlib

    with quiet_stderr():
        importlib.import_module(module)


@contextlib.contextmanager
def quiet_stderr():
    """Capture file descriptor 2 (native code's stderr too) inside the block;
    afterwards write back, in order, the lines that are not start-up noise
    (also when the block raises).

    Example:
    >>> with quiet_stderr():
    ...     pass
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):
        yield  # no usable stderr: nothing to filter
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def quiet_if_cli():
    """`quiet_stderr()` in the command-line process (unless
    `TF_CPP_MIN_LOG_LEVEL=0`), a no-op context elsewhere: the library never
    changes what a user's own program prints.

    Example:
    >>> with quiet_if_cli():  # in a library user's process: prints as usual
    ...     print("kept")
    kept
    """
    if is_cli_process() and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0":
        return quiet_stderr()
    return contextlib.nullcontext()
