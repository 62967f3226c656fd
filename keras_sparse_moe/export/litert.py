"""LiteRT (TFLite) export from any Keras backend (`export_litert`) and the
runner of the exported files (`LiteRTModel`).

TensorFlow traces and converts the model in-process; JAX and PyTorch hand a
backend-neutral `.keras` file to a TensorFlow-backend child (`handover.py`,
`_convert.py`). The graph is traced with `training=False` (no routing noise,
the static eval capacity of every `SparseMoE` layer), with only LiteRT
builtin ops: a conversion that needs any other op fails with an error naming
the op, why it is not allowed and its layer. Full int8 keeps the routers in
float32 (`float_routers.py`). Design and limits: docs/export.md.
"""

import json
import os
import re
import warnings

import keras
import numpy as np

from keras_sparse_moe._quiet_tensorflow import quiet_if_cli
from keras_sparse_moe.export import handover
from keras_sparse_moe.export.float_routers import convert_int8_float_routers
from keras_sparse_moe.export.float_routers import router_scopes
from keras_sparse_moe.utils.io import atomic_path

QUANTIZATION_MODES = (None, "float16", "dynamic_int8", "int8")
RAW_INPUT_DTYPES = ("uint8", "float32")
RAW_INPUT_NAME = "images"
"""Name of the input of a LiteRT file with preprocessing (raw images)."""
METADATA_NAME = "keras_sparse_moe"
"""Name of the JSON metadata entry of the exported flatbuffer (input kind,
raw shape, dtype and value range, preprocessing)."""
_BUILTIN_EXCLUDED = ("CUSTOM", "DELEGATE")


def check_parent_directory(path, what):
    """Check that the directory of `path` exists and is writable; `what`
    names the output in the errors."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(
            f"Cannot write {what} to {path!r}: directory {directory!r} does not exist. "
            "Create it first."
        )
    if not os.access(directory, os.W_OK):
        raise ValueError(
            f"Cannot write {what} to {path!r}: directory {directory!r} is not writable."
        )


def check_export_args(quantization, representative_data, quantize_routers, batch_size,
                      data_argument="representative_data"):
    """The arguments shared by `export_litert` and `export_dual_encoder`:
    `quantization` (see `check_quantization`; `data_argument` names the
    calibration data in its error), `quantize_routers` (a bool, True only
    with `"int8"`) and `batch_size` (an int >= 1 or None)."""
    check_quantization(quantization, representative_data, data_argument)
    if not isinstance(quantize_routers, bool):
        raise ValueError(
            f"Argument `quantize_routers` must be True or False; received {quantize_routers!r}."
        )
    if quantize_routers and quantization != "int8":
        raise ValueError(
            "Argument `quantize_routers=True` applies to quantization='int8' only (the other "
            f"modes keep router activations in float); received quantization={quantization!r}."
        )
    if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(
            f"Argument `batch_size` must be an int >= 1 or None (dynamic); received {batch_size!r}."
        )


def check_quantization(quantization, representative_data, data_argument="representative_data"):
    """`quantization` is one of `QUANTIZATION_MODES`; `"int8"` has
    calibration data."""
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"Argument `quantization` must be one of {list(QUANTIZATION_MODES)}; received "
            f"{quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            f"quantization='int8' (full integer) needs `{data_argument}`: a few hundred "
            "typical model inputs (e.g. training images) to calibrate activation ranges. "
            "Use quantization='dynamic_int8' to quantize weights only."
        )
    if quantization == "int8" and not litert_interpreter_available():
        # TensorFlow's converter calibrates int8 by running the model on the
        # LiteRT interpreter.
        raise ValueError(
            "quantization='int8' calibrates on the LiteRT interpreter (ai_edge_litert), which "
            "cannot be imported here; export with quantization=None, 'float16' or "
            f"'dynamic_int8', or install it ({LITERT_INSTALL_HINT})."
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
        _cast(np.asarray(col).reshape((-1,) + tuple(shape[1:])), dtype)
        for col, (_, shape, dtype) in zip(columns, specs)
    ]
    batch_size = batch_size or 1  # a dynamic batch calibrates one image at a time
    for start in range(0, len(columns[0]) - batch_size + 1, batch_size):
        yield [col[start : start + batch_size] for col in columns]


def image_converter(model):
    """The image converter of a task's preprocessor, or None.

    Example:
    >>> import keras
    >>> image_converter(keras.Sequential([keras.Input((2,))])) is None
    True
    """
    return getattr(getattr(model, "preprocessor", None), "image_converter", None)


def raw_input_spec(model, include_preprocessing=None, input_image_shape=None,
                   input_dtype="uint8", converter=None):
    """How the raw-image input of a LiteRT export with preprocessing looks:
    None when the preprocessing stays out of the file, else a dict with
    `shape` (height, width, channels of the raw images), `dtype`,
    `value_range` (declared by the image converter, or None), `channels`
    (of the model) and `preprocessing` (one line describing the steps).

    `include_preprocessing=None` includes it when `model` is a task with an
    image converter. `input_image_shape=None` takes the converter's
    `raw_image_shape`, else the model's own image shape. `converter` is the
    image converter for a `model` that does not hold one itself (e.g. the
    image tower of a dual encoder: its task's converter).

    Example:
    >>> from keras_sparse_moe.presets import from_preset
    >>> spec = raw_input_spec(from_preset("moe_vit_tiny"))
    >>> spec["shape"], spec["dtype"], spec["value_range"]
    ((8, 8, 1), 'uint8', (0.0, 16.0))
    """
    converter = converter if converter is not None else image_converter(model)
    if include_preprocessing is None:
        include_preprocessing = converter is not None
    if not isinstance(include_preprocessing, bool):
        raise ValueError(
            "Argument `include_preprocessing` must be None, True or False; received "
            f"{include_preprocessing!r}."
        )
    if input_dtype not in RAW_INPUT_DTYPES:
        raise ValueError(
            f"Argument `input_dtype` must be one of {list(RAW_INPUT_DTYPES)}; received "
            f"{input_dtype!r}."
        )
    if not include_preprocessing:
        if input_image_shape is not None:
            raise ValueError(
                "Argument `input_image_shape` sets the raw images of an export with "
                "preprocessing; it cannot be used with include_preprocessing=False (use "
                "`input_shape` for the model's own input)."
            )
        return None
    if converter is None:
        raise ValueError(
            f"include_preprocessing=True needs a task with an image preprocessor; "
            f"{type(model).__name__} has none (export it with include_preprocessing=False: "
            "the file then takes model inputs)."
        )
    backbone = getattr(model, "backbone", None)
    model_shape = tuple(getattr(backbone, "image_shape", None) or model.inputs[0].shape[1:])
    shape = input_image_shape
    if shape is None:
        shape = getattr(converter, "raw_image_shape", None) or model_shape
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else shape
    if isinstance(shape, tuple) and len(shape) == 2:
        shape = shape + (model_shape[-1],)
    if (not isinstance(shape, tuple) or len(shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
            or shape[2] not in (1, 3)):
        raise ValueError(
            "Argument `input_image_shape` must be (height, width) or (height, width, "
            f"channels) with ints >= 1 and 1 or 3 channels; received {input_image_shape!r}."
        )
    if converter.image_size is None and shape[:2] != tuple(model_shape[:2]):
        raise ValueError(
            f"The image converter of {type(model).__name__} does not resize, so the raw "
            f"images must be {tuple(model_shape[:2])}; received input_image_shape={shape}."
        )
    steps = []
    if shape[2] != model_shape[-1]:
        steps.append("RGB -> grayscale" if shape[2] == 3 else "grayscale -> RGB")
    describe = getattr(converter, "describe_input", None)
    detail = describe() if describe else ""
    inner = detail[detail.find("(") + 1 : -1] if "(" in detail else ""
    if inner:
        steps.append(inner)
    return {
        "shape": shape,
        "dtype": input_dtype,
        "value_range": getattr(converter, "value_range", None),
        "channels": int(model_shape[-1]),
        "preprocessing": ", ".join(steps) or "none",
    }


_GRAYSCALE_WEIGHTS = [0.2989, 0.587, 0.114]
"""RGB -> luma weights of `tf.image.rgb_to_grayscale` (ITU-R BT.601), as
the data pipelines convert RGB images for grayscale models."""


def _raw_serving(model, raw, converter=None):
    """The serving function of an export taking raw images."""
    import tensorflow as tf

    converter = converter if converter is not None else image_converter(model)

    def serve(images):
        # Float from the start, as the data pipelines resize (Keras' Resizing
        # would round integer images after interpolating, in eager mode only).
        x = tf.cast(images, "float32")
        if raw["shape"][2] != raw["channels"]:
            if raw["channels"] == 1:
                x = tf.reduce_sum(x * tf.constant(_GRAYSCALE_WEIGHTS), axis=-1, keepdims=True)
            else:
                x = tf.tile(x, [1, 1, 1, 3])
        return model(converter(x), training=False)

    return serve


def _cast(array, dtype):
    """`array` as `dtype`; float values for an integer dtype are rounded and
    clipped to its range, not truncated or wrapped."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        array = np.clip(np.round(array), info.min, info.max)
    return array.astype(dtype)


def _convert_tensorflow(model, quantization, representative, batch_size, input_shape,
                        quantize_routers=False, raw=None, converter=None):
    """Convert on the TensorFlow backend; returns the flatbuffer bytes."""
    import tensorflow as tf

    if raw is not None:
        specs = [(RAW_INPUT_NAME, (batch_size,) + raw["shape"], raw["dtype"])]
        serve = _raw_serving(model, raw, converter)
    else:
        specs = model_input_specs(model, batch_size, input_shape)

        def serve(*tensors):
            return model(_pack_inputs(model, list(tensors)), training=False)

    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]
    try:
        concrete = tf.function(serve, input_signature=signature).get_concrete_function()
    except Exception as error:  # Any error raised by a layer's call().
        raise _tracing_error(model, error) from None
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
    scopes = router_scopes(model) if quantization == "int8" and not quantize_routers else []
    try:
        # The calibrator's C++ line ("fully_quantize: 0, inference_type: ...") and a
        # UserWarning about input statistics (the inputs stay float32 by design) are
        # noise on the command line.
        with quiet_if_cli(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Statistics for quantized inputs")
            if scopes:
                flatbuffer = convert_int8_float_routers(converter, scopes)
            else:
                flatbuffer = converter.convert()
    except Exception as error:  # The converter raises ConverterError.
        raise _conversion_error(model, error) from None
    return strip_tensor_names(flatbuffer, metadata=_metadata(specs, raw, batch_size))


def _metadata(specs, raw, batch_size):
    """The JSON metadata of the export: what its input is."""
    if raw is None:
        return {"input": "model inputs (preprocessed)",
                "inputs": [[name, list(shape[1:]), dtype] for name, shape, dtype in specs],
                "batch_size": batch_size}
    return {
        "input": "raw images",
        "raw_image_shape": list(raw["shape"]),
        "dtype": raw["dtype"],
        "value_range": None if raw["value_range"] is None else list(raw["value_range"]),
        "preprocessing": raw["preprocessing"],
        "batch_size": batch_size,
    }


def strip_tensor_names(flatbuffer, metadata=None):
    """Drop the names of internal tensors (Keras name scopes, ~100 bytes
    each: a sixth of a small quantized model) from a LiteRT flatbuffer;
    input and output names stay. `metadata` (a JSON-serialisable dict) is
    stored as the flatbuffer's `METADATA_NAME` entry (read back by
    `litert_metadata`). Returns the input unchanged if TensorFlow's
    flatbuffer tools are unavailable."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError:  # pragma: no cover - depends on the TensorFlow build
        return flatbuffer
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None
    if metadata is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata = list(model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def litert_metadata(path):
    """The `METADATA_NAME` JSON entry of a `.tflite` file written by
    `export_litert` (what its input is), or `{}` when it has none. Needs no
    TensorFlow (reads the flatbuffer with the LiteRT schema).

    Example:
    >>> # litert_metadata("digits.tflite")["input"] -> 'raw images'
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the installed runtime
        from tensorflow.lite.python import schema_py_generated as schema
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            if entry.Name() and entry.Name().decode("utf-8") == METADATA_NAME:
                raw = model.Buffers(entry.Buffer()).DataAsNumpy()
                return json.loads(bytes(raw).decode("utf-8"))
    except Exception:  # noqa: BLE001 - a file without (readable) metadata
        return {}
    return {}


_WHY = {
    "ERROR_NEEDS_FLEX_OPS": "needs a Flex (select TF) kernel",
    "ERROR_NEEDS_CUSTOM_OPS": "has no LiteRT kernel (would be a custom op)",
}


def _layer_names(model):
    return {layer.name: type(layer).__name__ for layer in model._flatten_layers()}


def _layer_of_scope(scope, layers):
    """The innermost layer of `model` in a Keras/TensorFlow name scope such as
    `functional_1/my_layer_1/Erf` (TensorFlow appends `_1`, `_2`, ...)."""
    for segment in reversed(scope.split("/")[:-1]):
        for name in (segment, re.sub(r"_\d+$", "", segment)):
            if name in layers:
                return name
    return None


def _unsupported_ops(model, error):
    """`(op, why, layer)` for each op the converter rejected, from the
    structured errors of a `ConverterError`."""
    layers = _layer_names(model)
    found = []
    for data in getattr(error, "errors", None) or []:
        op = getattr(getattr(data, "operator", None), "name", "") or ""
        code = ""
        try:
            code = type(data).ErrorCode.Name(data.error_code)
        except (AttributeError, ValueError):
            pass
        if not op:
            continue
        scopes = [call.name for call in getattr(getattr(data, "location", None), "call", [])
                  if getattr(call, "name", "")]
        layer = next((l for l in (_layer_of_scope(s, layers) for s in scopes) if l), None)
        entry = (op.replace("tf.", ""), _WHY.get(code, "is not a LiteRT builtin op"), layer)
        if entry not in found:
            found.append(entry)
    return found, layers


def _conversion_error(model, error):
    found, layers = _unsupported_ops(model, error)
    if found:
        lines = [
            f"- op {op} {why}" + (f", in layer {layer!r} ({layers[layer]})" if layer else "")
            for op, why, layer in found[:10]
        ]
        detail = "\n".join(lines)
    else:
        message = str(error)
        named = sorted(name for name in layers if re.search(rf"\b{re.escape(name)}(_\d+)?/", message))
        kept = [
            line.strip() for line in message.splitlines()
            if "ops:" in line or "not supported" in line.lower()
            or "failed to legalize" in line.lower()
        ]
        detail = "\n".join(kept[:10]) or message[-2000:]
        if named:
            detail += f"\nLayers named in the error: {named}."
    return ValueError(
        "LiteRT conversion with builtin ops only failed (Flex/select-TF and custom ops "
        "are not allowed for edge runtimes):\n" + detail + "\nReplace these ops in the "
        "layer (keras.ops with LiteRT builtin kernels) or leave the layer out of the export."
    )


def _tracing_error(model, error):
    """The model could not be traced on the TensorFlow backend."""
    layers = _layer_names(model)
    message = str(error)
    classes = re.findall(r"when calling (\w+)\.call\(\)", message)
    named = sorted({name for name, cls in layers.items() if cls in classes})
    where = f" in layer(s) {named} ({', '.join(sorted(set(classes)))})" if named else ""
    return ValueError(
        f"Tracing {type(model).__name__} on the TensorFlow backend for LiteRT failed{where}: "
        f"{_cause(error)}\nLayers must use keras.ops (no backend-specific ops such as "
        "jax.numpy or torch functions) to be exported."
    )


def _cause(error):
    """`ErrorType: message` of the innermost error in a (tf.function-wrapped)
    Keras call error, without tracebacks, argument lists or terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines()]
    kind = type(error).__name__
    innermost = lines
    for index, line in enumerate(lines):
        match = re.match(r"(\w+(Error|Exception)): (.*)", line)
        if match:
            kind, innermost = match.group(1), [match.group(3)] + lines[index + 1:]
    lines = innermost
    kept = [line for line in lines if line and not line.startswith(
        ("Exception encountered", "Arguments received", "\u2022", "File ", "in user code"))]
    return f"{kind}: {' '.join(kept[:3]) or text.strip()[:500]}"


def _write_atomic(path, data):
    # Errors name `path`, not the temporary file beside it.
    with atomic_path(path, suffix=".tflite") as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as error:
            raise ValueError(f"Cannot write {path!r}: {error.strerror}.") from None


def export_litert(
    model,
    path,
    quantization=None,
    representative_data=None,
    batch_size=1,
    input_shape=None,
    quantize_routers=False,
    include_preprocessing=None,
    input_image_shape=None,
    input_dtype="uint8",
    image_converter=None,
):
    """Export a Keras model to a LiteRT (`.tflite`) file of builtin ops only.

    Works on every backend: TensorFlow converts in-process, JAX and PyTorch
    hand a temporary `.keras` file to a TensorFlow-backend subprocess.

    A task with an image preprocessor (e.g. a `MoEViTImageClassifier` from
    a preset) is exported with its preprocessing by default: the file takes
    raw images of `input_image_shape` (`input_dtype`, in the converter's
    `value_range`, e.g. 0..16 for the digits presets), converts grayscale
    <-> RGB when the raw channels differ from the model's, resizes (bilinear)
    and computes `raw * scale + offset` in the graph, with builtin ops, so
    its outputs match `model.predict(raw_images)`. The file's metadata
    (`litert_metadata`) records the raw input.

    Args:
        model: a single-input Keras model or task (e.g. a MoE-ViT
            classifier, or one tower of a dual encoder).
        path: output file; its directory must exist. Written atomically.
        quantization: None (float32), `"float16"`, `"dynamic_int8"`
            (int8 weights, float activations) or `"int8"` (full integer
            where kernels exist; needs `representative_data`).
        representative_data: array `(N, ...)` of typical inputs of the
            exported file (raw images when the preprocessing is included,
            model inputs otherwise), or an iterable of such arrays, for
            `"int8"` calibration.
        batch_size: int >= 1, the fixed batch size of the exported model
            (1, the default, suits microcontrollers), or None: a dynamic
            batch (the interpreter is resized to each batch; runs with the
            default XNNPACK delegate).
        input_shape: optional input shape without the batch axis, for models
            without static `inputs` (exports without preprocessing).
        quantize_routers: `"int8"` only. By default the ops of every
            `Router` layer (router logits, softmax, top-k selection) stay
            float32 so that routing decisions follow the float model; True
            quantizes them too.
        include_preprocessing: None (True for a task with an image
            converter, else False), True or False (the file takes model
            inputs, i.e. preprocessed images).
        input_image_shape: `(height, width)` or `(height, width, channels)`
            of the raw images; None takes the converter's `raw_image_shape`
            (8x8x1 for the digits presets), else the model's image shape.
        input_dtype: `"uint8"` (raw pixels as bytes, e.g. camera frames) or
            `"float32"`, the dtype of the raw-image input.
        image_converter: the image converter to include when `model` does
            not hold one (e.g. the image tower of a dual encoder: the task's
            converter); TensorFlow backend only.

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
    check_export_args(quantization, representative_data, quantize_routers, batch_size)
    path = os.fspath(path)
    check_parent_directory(path, "the LiteRT model")
    if os.path.isdir(path):
        raise ValueError(f"Output path {path!r} is a directory; give a file name such as model.tflite.")
    if image_converter is not None and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Argument `image_converter` needs the TensorFlow backend (the converter is not "
            "part of the saved model); export a task that holds its converter instead "
            "(`export_dual_encoder` does so for dual encoders on every backend)."
        )
    converter = image_converter
    raw = raw_input_spec(model, include_preprocessing, input_image_shape, input_dtype, converter)
    if raw is not None and input_shape is not None:
        raise ValueError(
            "Argument `input_shape` is the shape of model inputs; with the preprocessing "
            "included the file takes raw images: use `input_image_shape`."
        )
    representative = _as_representative(representative_data)
    if keras.backend.backend() != "tensorflow":
        if raw is None:  # validated here, in the user's process, for a clear error
            model_input_specs(model, batch_size, input_shape)
        args = []
        if input_shape is not None:
            args += ["--input-shape", ",".join(str(int(d)) for d in input_shape)]
        handover.convert_in_child(model, path, quantization, batch_size, quantize_routers, raw,
                                  {"--representative": representative}, *args)
        return path
    data = _convert_tensorflow(model, quantization, representative, batch_size, input_shape,
                               quantize_routers=quantize_routers, raw=raw, converter=converter)
    _write_atomic(path, data)
    return path


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


LITERT_INSTALL_HINT = "pip install 'keras-sparse-moe[litert]'"
"""How to install the LiteRT interpreter (`ai_edge_litert`)."""


def litert_interpreter_available():
    """Whether the LiteRT interpreter (`ai_edge_litert`) can be imported.

    Exporting needs only TensorFlow's converter; running a `.tflite` file
    (`LiteRTModel`, `list_litert_ops`) needs the interpreter, a dependency
    on the platforms it has wheels for (Linux x86_64 / aarch64, macOS arm64)
    and otherwise `LITERT_INSTALL_HINT`.

    Example:
    >>> isinstance(litert_interpreter_available(), bool)
    True
    """
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreter(path, num_threads=None):
    if not os.path.isfile(path):
        raise ValueError(f"No LiteRT model at {path!r}.")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeError(
            "Running a .tflite file needs the LiteRT interpreter (the ai_edge_litert package), "
            f"which is not installed: {LITERT_INSTALL_HINT} (wheels exist for Linux x86_64 / "
            f"aarch64 and macOS arm64). {os.fspath(path)!r} itself is complete: any LiteRT "
            "runtime can run it."
        ) from None
    try:
        return Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"LiteRT model {os.fspath(path)!r} cannot be read ({reason}): it is truncated, "
            "damaged or not a .tflite file; export it again."
        ) from None


class LiteRTModel:
    """Run a `.tflite` file with the `ai_edge_litert` interpreter.

    Inputs of any batch size are split into the model's fixed batch size
    (the last batch is padded); a file exported with `batch_size=None` runs
    each call as one batch (the interpreter is resized; resizing a
    fixed-batch file instead fails in the XNNPACK delegate, whose graph
    keeps the batch of the export). A model with several inputs (e.g. a
    text tower: `token_ids`, `padding_mask`) takes a dict keyed by input
    name. A file exported with its preprocessing (`raw_input` True) takes
    raw images as `task.predict` does; a uint8 input refuses values that
    are not whole numbers in 0..255 instead of wrapping them.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (default 2).

    Example:
    >>> # runner = LiteRTModel("model.tflite"); logits = runner(images)
    """

    def __init__(self, path, num_threads=2):
        self.path = os.fspath(path)
        self.interpreter = _interpreter(self.path, num_threads=num_threads)
        with quiet_if_cli():  # the XNNPACK delegate's INFO line on the command line
            self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.input = self.inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        signature = self.input.get("shape_signature", self.input["shape"])
        self.batch_size = None if int(signature[0]) == -1 else int(self.input["shape"][0])
        self.metadata = litert_metadata(self.path)

    @property
    def raw_input(self):
        """Whether the file includes the preprocessing (takes raw images)."""
        return self.metadata.get("input") == "raw images"

    def describe_input(self):
        """One line: the input's dtype and shape (`N` for a dynamic batch),
        and for raw images their value range and the preprocessing steps in
        the graph."""
        shape = ("N" if self.batch_size is None else str(self.batch_size),) + tuple(
            str(int(d)) for d in self.input["shape"][1:])
        text = f"{np.dtype(self.input['dtype']).name} ({', '.join(shape)})"
        if self.raw_input:
            value_range = self.metadata.get("value_range")
            values = f" values {value_range[0]:g}..{value_range[1]:g}" if value_range else ""
            text += f" raw images{values}; in the graph: {self.metadata.get('preprocessing')}"
        return text

    @property
    def ops(self):
        """Sorted op types of the model file (as `list_litert_ops`): the
        `DELEGATE` nodes the interpreter adds at run time (XNNPACK) are not
        part of the file and are left out."""
        return sorted({d["op_name"] for d in self.interpreter._get_ops_details()} - {"DELEGATE"})

    @property
    def input_names(self):
        """Input names as given at export (converter prefixes removed)."""
        return [_input_name(d["name"]) for d in self.inputs]

    def _arrays(self, inputs):
        """The arrays of `inputs` (an array, or a dict keyed by input name)
        in the interpreter's input order and dtypes."""
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                raise ValueError(
                    f"LiteRT model {self.path!r} has inputs {self.input_names}: pass a dict "
                    "of arrays keyed by these names."
                )
            inputs = {self.input_names[0]: inputs}
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(
                f"LiteRT model {self.path!r} needs inputs {self.input_names}; missing {missing}."
            )
        return [self._as_input(inputs[name], detail) for detail, name in
                zip(self.inputs, self.input_names)]

    def _as_input(self, values, detail):
        dtype = np.dtype(detail["dtype"])
        values = np.asarray(values)
        if dtype == np.uint8 and values.dtype != np.uint8 and values.size:
            if values.dtype.kind not in "uif" or np.min(values) < 0 or np.max(values) > 255 \
                    or (values.dtype.kind == "f" and not np.array_equal(values, np.round(values))):
                raise ValueError(
                    f"LiteRT model {self.path!r} takes uint8 images (whole numbers 0..255); "
                    f"received {values.dtype} values in [{np.min(values):g}, {np.max(values):g}]."
                )
        return values.astype(dtype)

    def _run(self, arrays):
        if self.batch_size is None:
            n = len(arrays[0])
            if any(int(d["shape"][0]) != n for d in self.interpreter.get_input_details()):
                for detail, array in zip(self.inputs, arrays):
                    self.interpreter.resize_tensor_input(detail["index"], array.shape)
                with quiet_if_cli():
                    self.interpreter.allocate_tensors()
        for detail, array in zip(self.inputs, arrays):
            self.interpreter.set_tensor(detail["index"], array)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))

    def predict_on_batch(self, batch):
        """Run exactly one batch of the model's batch size (an array, or a
        dict of arrays for several inputs)."""
        return self._run(self._arrays(batch))

    def __call__(self, inputs):
        arrays = self._arrays(inputs)
        for name, detail, array in zip(self.input_names, self.inputs, arrays):
            expected = tuple(int(d) for d in detail["shape"][1:])
            if tuple(array.shape[1:]) != expected:
                label = f"input {name!r}" if isinstance(inputs, dict) else "inputs"
                raise ValueError(
                    f"LiteRT model {self.path!r} expects {label} of shape (N,) + {expected}; "
                    f"received {array.shape}."
                )
        if self.batch_size is None:
            return self._run(arrays)
        n = len(arrays[0])
        outputs = []
        for start in range(0, n, self.batch_size):
            chunk = [array[start : start + self.batch_size] for array in arrays]
            pad = self.batch_size - len(chunk[0])
            if pad:  # the last batch, padded with copies of its last row
                chunk = [np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
                         for part in chunk]
            outputs.append(self._run(chunk)[: self.batch_size - pad])
        return np.concatenate(outputs, axis=0)


def _input_name(name):
    """`serving_default_token_ids:0` -> `token_ids`."""
    name = name.split(":")[0]
    prefix = "serving_default_"
    return name[len(prefix):] if name.startswith(prefix) else name
