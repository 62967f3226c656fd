"""Choose the Keras backend of the `keras-sparse-moe` command line before
Keras is imported.

`import keras_sparse_moe` imports Keras, and Keras fixes its backend on
import from `KERAS_BACKEND`. For the command-line process only, the package
calls `choose_backend` first, so that `--backend NAME` takes effect without
starting the process again, and a `KERAS_BACKEND` that Keras cannot import
gets one clear line instead of a traceback from deep inside Keras.
"""

import os
import sys

CLI_BACKENDS = ("tensorflow", "jax", "torch")
"""The backends the command line offers with `--backend`."""
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
"""The values Keras itself accepts in `KERAS_BACKEND`."""


def requested_backend(argv):
    """The backend named by `--backend NAME` / `--backend=NAME` in `argv`
    (one of `CLI_BACKENDS`), or None; other values are left to argparse.

    Example:
    >>> requested_backend(["train", "--backend", "jax", "--epochs", "1"])
    'jax'
    >>> requested_backend(["presets", "--backend=torch"]), requested_backend(["presets"])
    ('torch', None)
    """
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        else:
            continue
        return value if value in CLI_BACKENDS else None
    return None


def backend_problem(environ, argv):
    """`(backend to set or None, error message or None)` for the command line.

    Example:
    >>> backend_problem({"KERAS_BACKEND": "jax"}, ["presets", "--backend", "torch"])
    ('torch', None)
    >>> backend_problem({"KERAS_BACKEND": "bogus"}, ["presets"])[1][:41]
    "KERAS_BACKEND='bogus' is not a Keras back"
    """
    requested = requested_backend(argv)
    if requested is not None:
        return requested, None
    current = environ.get("KERAS_BACKEND")
    if current is not None and current not in KERAS_BACKENDS:
        return None, (
            f"KERAS_BACKEND={current!r} is not a Keras backend; set it to one of "
            f"{', '.join(CLI_BACKENDS)} or pass --backend {CLI_BACKENDS[0]}"
        )
    return None, None


def choose_backend():
    """Apply `--backend` from `sys.argv` to `KERAS_BACKEND`, or exit with
    status 2 and one line on stderr if `KERAS_BACKEND` names no backend."""
    backend, problem = backend_problem(os.environ, sys.argv[1:])
    if backend is not None:
        os.environ["KERAS_BACKEND"] = backend
    elif problem is not None:
        print(f"keras-sparse-moe: error: {problem}", file=sys.stderr)
        sys.exit(2)
