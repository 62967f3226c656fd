"""LiteRT (TFLite) export from any Keras backend.

Design: the TensorFlow LiteRT converter needs a TensorFlow graph. When the
current backend is TensorFlow the model is traced and converted in-process.
On JAX or PyTorch the model is saved to a temporary `.keras` file (the format
is backend-neutral: weights are plain arrays) and converted by a child Python
process started with `KERAS_BACKEND=tensorflow`
(`python -m keras_sparse_moe.export._convert`), which loads it in Keras safe
mode. Either way:

- the graph is traced with `training=False`: no routing noise or jitter, and
  the static *eval* capacity of every `SparseMoE` layer;
- the batch size is fixed (default 1), so every shape is static;
- only LiteRT builtin ops are allowed (`TFLITE_BUILTINS`, no Flex / select TF
  ops, no custom ops); a conversion that needs anything else fails with an
  error naming the op;
- the file is written atomically: a failed export leaves no file behind.
"""

import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

from keras_sparse_moe.utils.io import default_permissions

QUANTIZATION_MODES = (None, "float16", "dynamic_int8", "int8")
_BUILTIN_EXCLUDED = ("CUSTOM", "DELEGATE")


def _check_output_path(path):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(
            f"Cannot write the LiteRT model to {path!r}: directory {directory!r} does not "
            "exist. Create it first."
        )
    if not os.access(directory, os.W_OK):
        raise ValueError(
            f"Cannot write the LiteRT model to {path!r}: directory {directory!r} is not "
            "writable."
        )
    if os.path.isdir(path):
        raise ValueError(f"Output path {path!r} is a directory; give a file name such as model.tflite.")
    return path


def _check_quantization(quantization, representative_data):
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"Argument `quantization` must be one of {list(QUANTIZATION_MODES)}; received "
            f"{quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' (full integer) needs `representative_data`: a few hundred "
            "typical model inputs (e.g. training images) to calibrate activation ranges. "
            "Use quantization='dynamic_int8' to quantize weights only."
        )


def _as_representative(representative_data):
    """Representative data as a float32 array `(N, ...)` (one input) or a
    dict of such arrays keyed by input name (several inputs)."""
    if representative_data is None:
        return None
    if isinstance(representative_data, dict):
        if not representative_data:
            raise ValueError("Argument `representative_data` is an empty dict.")
        arrays = {str(k): np.asarray(v) for k, v in representative_data.items()}
        counts = {len(v) for v in arrays.values()}
        if len(counts) != 1:
            raise ValueError(
                "The arrays of `representative_data` must have the same number of samples; "
                f"received {({k: len(v) for k, v in arrays.items()})}."
            )
        return arrays
    if isinstance(representative_data, np.ndarray) or hasattr(representative_data, "shape"):
        return np.asarray(representative_data, dtype="float32")
    arrays = [np.asarray(x, dtype="float32") for x in representative_data]
    if not arrays:
        raise ValueError("Argument `representative_data` is empty.")
    return np.concatenate([a.reshape((-1,) + a.shape[1:]) for a in arrays], axis=0)


def model_input_specs(model, batch_size=1, input_shape=None):
    """The static inputs of a model, batch axis fixed: a list of `(name,
    shape, dtype)`, one per input, in the order of `model.inputs`.

    Example:
    >>> import keras
    >>> inputs = keras.Input((4, 8), name="x")
    >>> model_input_specs(keras.Model(inputs, inputs * 2))
    [('x', (1, 4, 8), 'float32')]
    """
    if input_shape is not None:
        return [("input", (batch_size,) + tuple(input_shape), "float32")]
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"Cannot infer the input shape of {type(model).__name__}: it has no `inputs` "
            "(not a functional model). Pass `input_shape=(...)` without the batch axis."
        )
    specs = []
    for tensor in inputs:
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Input {tensor.name!r} of {type(model).__name__} has unknown dimensions "
                f"{shape}; LiteRT needs static shapes. Pass `input_shape=` (single-input "
                "models) or build the model with fixed input shapes."
            )
        specs.append((tensor.name, (batch_size,) + shape, keras.backend.standardize_dtype(tensor.dtype)))
    names = [name for name, _, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"The inputs of {type(model).__name__} need distinct names; received {names}.")
    return specs


def _pack_inputs(model, tensors):
    """Call structure of `model` (dict, list or single tensor) from the flat
    list of input tensors in `model.inputs` order."""
    if len(tensors) == 1:
        return tensors[0]
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return keras.tree.pack_sequence_as(struct, tensors)
    return list(tensors)


def _representative_batches(specs, representative, batch_size):
    """Calibration batches (lists in input order) for the converter."""
    if isinstance(representative, dict):
        missing = [name for name, _, _ in specs if name not in representative]
        if missing:
            raise ValueError(
                f"`representative_data` lacks inputs {missing}; it has {sorted(representative)}."
            )
        columns = [representative[name] for name, _, _ in specs]
    else:
        if len(specs) != 1:
            raise ValueError(
                f"The model has {len(specs)} inputs ({[n for n, _, _ in specs]}): give "
                "`representative_data` as a dict of arrays keyed by input name."
            )
        columns = [representative]
    columns = [
        np.asarray(col).reshape((-1,) + shape[1:]).astype(dtype)
        for col, (_, shape, dtype) in zip(columns, specs)
    ]
    for start in range(0, len(columns[0]) - batch_size + 1, batch_size):
        yield [col[start : start + batch_size] for col in columns]


def _convert_tensorflow(model, quantization, representative, batch_size, input_shape):
    """Convert on the TensorFlow backend; returns the flatbuffer bytes."""
    import tensorflow as tf

    specs = model_input_specs(model, batch_size, input_shape)
    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]

    @tf.function(input_signature=signature)
    def serve(*tensors):
        return model(_pack_inputs(model, list(tensors)), training=False)

    concrete = serve.get_concrete_function()
    # No trackable object: the converter then freezes variables to constants
    # (with it, resource-variable ops remain and fail at run time).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        batches = list(_representative_batches(specs, representative, batch_size))
        if not batches:
            raise ValueError(
                f"`representative_data` has fewer samples than the batch size {batch_size}."
            )
        converter.representative_dataset = lambda: iter(batches)
        # Integer kernels where LiteRT has them; routing ops without int8
        # kernels (top-k, cumsum, one-hot) stay in float.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # The converter raises ConverterError.
        raise _conversion_error(model, error) from None
    return strip_tensor_names(flatbuffer)


def strip_tensor_names(flatbuffer):
    """Drop the names of internal tensors (Keras name scopes, ~100 bytes
    each: a sixth of a small quantized model) from a LiteRT flatbuffer;
    input and output names stay. Returns the input unchanged if TensorFlow's
    flatbuffer tools are unavailable."""
    try:
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError:  # pragma: no cover - depends on the TensorFlow build
        return flatbuffer
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _conversion_error(model, error):
    message = str(error)
    unsupported = [
        line.strip()
        for line in message.splitlines()
        if "not supported" in line.lower() or "failed to legalize" in line.lower()
        or "Flex" in line
    ]
    layers = sorted({
        layer.name
        for layer in getattr(model, "_flatten_layers", lambda: [])()
        if layer.name and layer.name in message
    })
    hint = f" Layers named in the error: {layers}." if layers else ""
    detail = "\n".join(unsupported[:10]) or message[-2000:]
    return ValueError(
        "LiteRT conversion with builtin ops only failed (Flex/select-TF and custom ops "
        f"are not allowed for edge runtimes).{hint}\n{detail}"
    )


def _write_atomic(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def export_litert(
    model,
    path,
    quantization=None,
    representative_data=None,
    batch_size=1,
    input_shape=None,
):
    """Export a Keras model to a LiteRT (`.tflite`) file of builtin ops only.

    Works on every backend: TensorFlow converts in-process, JAX and PyTorch
    hand a temporary `.keras` file to a TensorFlow-backend subprocess.

    Args:
        model: a single-input Keras model (e.g. a MoE-ViT classifier, or one
            tower of a dual encoder). Inputs must already be preprocessed.
        path: output file; its directory must exist. Written atomically.
        quantization: None (float32), `"float16"`, `"dynamic_int8"`
            (int8 weights, float activations) or `"int8"` (full integer
            where kernels exist; needs `representative_data`).
        representative_data: array `(N, ...)` of typical model inputs, or an
            iterable of such arrays, for `"int8"` calibration.
        batch_size: int >= 1, the fixed batch size of the exported model.
        input_shape: optional input shape without the batch axis, for models
            without static `inputs`.

    Returns:
        The path written.

    Example:
    >>> import keras, numpy as np, tempfile, os
    >>> import keras_sparse_moe as ksm
    >>> inputs = keras.Input((4, 8))
    >>> model = keras.Model(inputs, ksm.SparseMoE(4, 16)(inputs))
    >>> out = os.path.join(tempfile.mkdtemp(), "moe.tflite")
    >>> export_litert(model, out) == out
    True
    """
    _check_quantization(quantization, representative_data)
    path = _check_output_path(path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be an int >= 1; received {batch_size!r}.")
    representative = _as_representative(representative_data)
    if keras.backend.backend() == "tensorflow":
        data = _convert_tensorflow(model, quantization, representative, batch_size, input_shape)
        _write_atomic(path, data)
        return path
    _export_via_subprocess(model, path, quantization, representative, batch_size, input_shape)
    return path


def _export_via_subprocess(model, path, quantization, representative, batch_size, input_shape):
    # Validate here, in the user's process, for a clear error.
    model_input_specs(model, batch_size, input_shape)
    with tempfile.TemporaryDirectory(prefix="ksm-export-") as tmp:
        model_path = os.path.join(tmp, "model.keras")
        model.save(model_path)
        args = [
            sys.executable, "-m", "keras_sparse_moe.export._convert",
            "--model", model_path, "--output", os.path.abspath(path),
            "--batch-size", str(batch_size),
        ]
        if quantization:
            args += ["--quantization", quantization]
        if representative is not None:
            data_path = os.path.join(tmp, "representative.npz")
            if isinstance(representative, dict):
                np.savez(data_path, **representative)
            else:
                np.savez(data_path, **{_SINGLE_INPUT_KEY: representative})
            args += ["--representative", data_path]
        if input_shape is not None:
            args += ["--input-shape", ",".join(str(int(d)) for d in input_shape)]
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        run_subprocess(args, env)


_SINGLE_INPUT_KEY = "__single_input__"


def load_representative(path):
    """Inverse of the subprocess hand-over: an array or a dict of arrays."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays[_SINGLE_INPUT_KEY] if _SINGLE_INPUT_KEY in arrays else arrays


def run_subprocess(args, env):
    """Run a TensorFlow-backend conversion child; a clear error on failure."""
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("ValueError") or "Error" in l]
        detail = "\n".join(errors[-5:] or lines[-20:])
        raise ValueError(f"LiteRT export (TensorFlow subprocess) failed:\n{detail}")


def list_litert_ops(path):
    """Sorted names of the ops in a LiteRT model.

    Example:
    >>> # list_litert_ops("model.tflite") -> ['ADD', 'BATCH_MATMUL', ...]
    """
    interpreter = _interpreter(path)
    return sorted({d["op_name"] for d in interpreter._get_ops_details()})


def non_builtin_ops(op_names):
    """The op names that are not LiteRT builtins (Flex, custom, delegate)."""
    return [
        name for name in op_names
        if name.startswith("Flex") or name in _BUILTIN_EXCLUDED or not name.isupper()
    ]


def _interpreter(path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    if not os.path.isfile(path):
        raise ValueError(f"No LiteRT model at {path!r}.")
    return Interpreter(model_path=os.fspath(path), num_threads=num_threads)


class LiteRTModel:
    """Run a `.tflite` file with the `ai_edge_litert` interpreter.

    Inputs of any batch size are split into the model's fixed batch size
    (the last batch is padded). A model with several inputs (e.g. a text
    tower: `token_ids`, `padding_mask`) takes a dict keyed by input name.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (default 2).

    Example:
    >>> # runner = LiteRTModel("model.tflite"); logits = runner(images)
    """

    def __init__(self, path, num_threads=2):
        self.path = os.fspath(path)
        self.interpreter = _interpreter(self.path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.input = self.inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch_size = int(self.input["shape"][0])

    @property
    def ops(self):
        return sorted({d["op_name"] for d in self.interpreter._get_ops_details()})

    @property
    def input_names(self):
        """Input names as given at export (converter prefixes removed)."""
        return [_input_name(d["name"]) for d in self.inputs]

    def _feed(self, batch):
        if not isinstance(batch, dict):
            if len(self.inputs) != 1:
                raise ValueError(
                    f"LiteRT model {self.path!r} has inputs {self.input_names}: pass a dict "
                    "of arrays keyed by these names."
                )
            batch = {self.input_names[0]: batch}
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise ValueError(
                f"LiteRT model {self.path!r} needs inputs {self.input_names}; missing {missing}."
            )
        for detail, name in zip(self.inputs, self.input_names):
            self.interpreter.set_tensor(detail["index"], np.asarray(batch[name], dtype=detail["dtype"]))

    def predict_on_batch(self, batch):
        """Run exactly one batch of the model's batch size (an array, or a
        dict of arrays for several inputs)."""
        self._feed(batch)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))

    def __call__(self, inputs):
        columns = inputs if isinstance(inputs, dict) else {None: inputs}
        names = self.input_names if isinstance(inputs, dict) else [None]
        arrays = {}
        for name, detail in zip(names, self.inputs if isinstance(inputs, dict) else [self.input]):
            if name not in columns:
                raise ValueError(
                    f"LiteRT model {self.path!r} needs inputs {self.input_names}; received "
                    f"{sorted(columns)}."
                )
            array = np.asarray(columns[name], dtype=detail["dtype"])
            expected = tuple(int(d) for d in detail["shape"][1:])
            if tuple(array.shape[1:]) != expected:
                label = f"input {name!r}" if name else "inputs"
                raise ValueError(
                    f"LiteRT model {self.path!r} expects {label} of shape (N,) + {expected}; "
                    f"received {array.shape}."
                )
            arrays[name] = array
        n = len(next(iter(arrays.values())))
        outputs = []
        for start in range(0, n, self.batch_size):
            chunk = {}
            for name, array in arrays.items():
                part = array[start : start + self.batch_size]
                pad = self.batch_size - len(part)
                if pad:
                    part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
                chunk[name] = part
            pad = self.batch_size - min(self.batch_size, n - start)
            batch = chunk if isinstance(inputs, dict) else chunk[None]
            outputs.append(self.predict_on_batch(batch)[: self.batch_size - pad])
        return np.concatenate(outputs, axis=0)


def _input_name(name):
    """`serving_default_token_ids:0` -> `token_ids`."""
    name = name.split(":")[0]
    for prefix in ("serving_default_",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name
