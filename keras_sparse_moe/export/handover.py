"""Hand-over of a model from JAX/PyTorch to the TensorFlow-backend child
process that converts it to LiteRT.

The parent saves the model as a `.keras` file; the child
(`python -m keras_sparse_moe.export._convert`, `KERAS_BACKEND=tensorflow`)
loads it in Keras safe mode. This module:

- checks, before anything is saved, that every layer can be rebuilt in the
  child: its class must be importable by module path (not defined in
  `__main__` or inside a function) and a `Lambda` layer must wrap a named,
  importable function (safe mode refuses Python lambdas);
- lists the modules of custom layers so that the child imports them (which
  registers their classes) with their import roots on `PYTHONPATH`;
- runs the child (`convert_in_child`, for `export_litert` and
  `export_dual_encoder` alike) and turns its failure into a `ValueError`
  carrying the child's own message.
"""

import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

SINGLE_INPUT_KEY = "__single_input__"
ERROR_MARKER = "KERAS_SPARSE_MOE_EXPORT_ERROR:"
_KNOWN_PACKAGES = ("keras", "keras_sparse_moe", "keras_hub", "tensorflow", "builtins")


def _origin(obj):
    """`(module, qualname)` of a class or function."""
    return getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "") or ""


def _unimportable_reason(obj, what):
    module, qualname = _origin(obj)
    if module == "__main__":
        return f"its {what} {qualname!r} is defined in __main__ (the script being run)"
    if "<locals>" in qualname or "<lambda>" in qualname:
        return f"its {what} {qualname!r} is defined inside a function"
    return None


def custom_modules(model):
    """Modules (outside Keras and this package) that define layers of
    `model`, after checking that the TensorFlow child can rebuild every layer.

    Raises:
        ValueError: naming the first layer that cannot be rebuilt, and why.
    """
    modules = set()
    for layer in model._flatten_layers():
        reason = _unimportable_reason(type(layer), "class")
        if reason is None and isinstance(layer, keras.layers.Lambda):
            function = getattr(layer, "function", None)
            if getattr(function, "__name__", "") == "<lambda>":
                reason = "it wraps a Python lambda, which Keras safe mode does not load"
            elif function is not None:
                reason = _unimportable_reason(function, "function")
                modules.add(_origin(function)[0])
        if reason:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) cannot be exported from the "
                f"{keras.backend.backend()} backend: {reason}. Export from JAX/PyTorch rebuilds "
                "the model in a TensorFlow-backend process, which loads it in Keras safe mode. "
                "Define the layer class in an importable module and register it with "
                "@keras.saving.register_keras_serializable(), or export on the TensorFlow "
                "backend."
            )
        modules.add(_origin(type(layer))[0])
    return sorted(
        m for m in modules if m and m.split(".")[0] not in _KNOWN_PACKAGES
    )


def import_roots(modules):
    """Directories to put on `PYTHONPATH` so that `modules` import in the child."""
    roots = []
    for name in modules:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path:
            continue
        root = os.path.dirname(os.path.abspath(path))
        depth = name.count(".") + (os.path.basename(path) == "__init__.py")
        for _ in range(depth):
            root = os.path.dirname(root)
        if root not in roots:
            roots.append(root)
    return roots


def convert_in_child(model, output, quantization, batch_size, quantize_routers, raw, arrays,
                     *args):
    """Save `model` to a temporary `.keras` file and convert it in a
    TensorFlow-backend child into `output`.

    Args:
        raw: the `raw_input_spec` of the export, or None (no preprocessing).
        arrays: dict `{flag: data}` of calibration data (None: not given),
            handed over as `.npz` files.
        *args: more command-line arguments of the child.
    """
    modules = custom_modules(model)
    with tempfile.TemporaryDirectory(prefix="ksm-export-") as tmp:
        model_path = os.path.join(tmp, "model.keras")
        model.save(model_path)
        args = [*args, "--model", model_path, "--output", os.path.abspath(output),
                "--batch-size", "none" if batch_size is None else str(batch_size)]
        if quantization:
            args += ["--quantization", quantization]
        if quantize_routers:
            args += ["--quantize-routers"]
        if raw is None:
            args += ["--no-preprocessing"]
        else:
            args += ["--input-image-shape", ",".join(str(d) for d in raw["shape"]),
                     "--input-dtype", raw["dtype"]]
        for flag, data in arrays.items():
            if data is not None:
                data_path = os.path.join(tmp, flag.strip("-") + ".npz")
                save_arrays(data_path, data)
                args += [flag, data_path]
        run_child(modules, args)


def run_child(modules, args):
    """Run a conversion child with `args`, importing `modules` (custom
    layers) from their import roots; a `ValueError` with its message on
    failure."""
    command = [sys.executable, "-m", "keras_sparse_moe.export._convert", *args]
    for name in modules:
        command += ["--import", name]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    roots = import_roots(modules)
    if roots:
        env["PYTHONPATH"] = os.pathsep.join(roots + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode == 0:
        return
    stderr = result.stderr
    if ERROR_MARKER in stderr:
        raise ValueError(stderr.split(ERROR_MARKER, 1)[1].strip())
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ValueError") or "Error" in line]
    detail = "\n".join(errors[-5:] or lines[-20:])
    raise ValueError(f"LiteRT export (TensorFlow subprocess) failed:\n{detail}")


def report_error(error):
    """Child side: print `error` for `run_child` and exit with status 2."""
    sys.stderr.write(f"\n{ERROR_MARKER}{error}\n")
    sys.stderr.flush()
    sys.exit(2)


def load_error(error):
    """Child side: a clear message for a `.keras` file that does not load."""
    message = str(error).split("Full object config")[0].strip()
    return ValueError(
        f"The TensorFlow-backend export process could not rebuild the model: {message}"
    )


def save_arrays(path, data):
    """Save representative data (an array or a dict of arrays) for the child."""
    if isinstance(data, dict):
        np.savez(path, **data)
    else:
        np.savez(path, **{SINGLE_INPUT_KEY: data})


def load_arrays(path):
    """Inverse of `save_arrays`: an array or a dict of arrays."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays[SINGLE_INPUT_KEY] if SINGLE_INPUT_KEY in arrays else arrays
