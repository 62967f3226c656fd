"""Full-integer LiteRT quantization that keeps the routers in float32.

Top-k routing on int8 router logits is fragile: two experts whose gates
differ by less than one quantization step tie, and calibration ranges are
set by the largest logits, so small gate differences are lost. The router of
a `SparseMoE` layer is a small part of the model (a `dim x num_experts`
matmul, a softmax, top-k and slot bookkeeping), so `"int8"` export keeps all
of its ops in float32 and quantizes the rest (attention, experts, MLPs).

How: the converter calibrates the float model (`_experimental_calibrate_only`),
then TensorFlow's MLIR quantizer quantizes every op except the router ops,
found by their Keras name scope (the names of the model's `Router` layers),
as TensorFlow's selective-quantization debugger does. If this TensorFlow build
lacks that path, the export falls back to quantizing the routers too, with a
warning.
"""

import re
import warnings


def router_scopes(model):
    """Names of the router layers of `model` (their Keras name scopes)."""
    from keras_sparse_moe.layers import Router

    return sorted({layer.name for layer in model._flatten_layers() if isinstance(layer, Router)})


def _scope_pattern(scopes):
    # TensorFlow uniquifies a repeated name scope as `name_1`, `name_2`, ...
    names = "|".join(re.escape(s) for s in scopes)
    return re.compile(rf"(^|/)({names})(_\d+)?/")


def router_nodes(flatbuffer, scopes):
    """Output tensor names of the ops inside the router scopes of a
    (calibrated, not yet quantized) LiteRT model."""
    from ai_edge_litert.interpreter import Interpreter

    pattern = _scope_pattern(scopes)
    interpreter = Interpreter(model_content=bytes(flatbuffer))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    nodes = set()
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            name = names.get(index, "")
            # Fused ops carry several `;`-separated names.
            if any(pattern.search(part) for part in name.split(";")):
                nodes.add(name)
    return sorted(nodes)


def convert_int8_float_routers(converter, scopes):
    """Run a converter set up for full int8 (optimizations and representative
    data), keeping the ops under `scopes` in float32. Returns the flatbuffer."""
    try:
        from tensorflow.lite.python import convert as tf_convert

        quantize = tf_convert.mlir_quantize
    except (ImportError, AttributeError):  # pragma: no cover - other TF builds
        warnings.warn(
            "This TensorFlow build cannot keep routers in float during int8 quantization; "
            "the routers are quantized too.",
            stacklevel=3,
        )
        return converter.convert()
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    nodes = router_nodes(calibrated, scopes)
    return quantize(
        calibrated,
        disable_per_channel=converter._experimental_disable_per_channel,
        denylisted_nodes=nodes or None,
    )
