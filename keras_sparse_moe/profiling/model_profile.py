"""`profile(model)`: parameters and FLOPs of any Keras model with `SparseMoE`
layers, measured by walking its sublayers and tracing one forward pass
(conventions in `keras_sparse_moe.profile`)."""

import inspect
import math
import numbers
import re

import keras
import numpy as np
from keras_hub.layers import PositionEmbedding
from keras_hub.layers import ReversibleEmbedding

from keras_sparse_moe.layers.experts import Experts
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.sparse_moe import SparseMoE
from keras_sparse_moe.profiling.results import ModelProfile
from keras_sparse_moe.profiling.results import MoELayerProfile


# ----------------------------------------------------------------------------
# Small pure helpers
# ----------------------------------------------------------------------------
def _size(shape):
    return int(math.prod(int(d) for d in shape))


def _weights_size(weights):
    return int(sum(_size(w.shape) for w in weights))


def _children(layer):
    return layer._flatten_layers(include_self=False, recursive=False)


def _walk(model):
    """`(path, layer)` for every sublayer of `model` (depth first, each
    layer once), paths joined with "/" and relative to `model`."""
    seen = {id(model)}
    found = []

    def visit(layer, prefix):
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            found.append((path, child))
            visit(child, path + "/")

    visit(model, "")
    return found


def _known_free_types():
    """Layer types with weights but no matrix product (FLOPs not counted)."""
    names = (
        "LayerNormalization", "BatchNormalization", "GroupNormalization",
        "RMSNormalization", "UnitNormalization", "Normalization", "Embedding",
        "PReLU",
    )
    types = tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))
    # keras-hub lookups (ReversibleEmbedding is a lookup when embedding).
    return types + (PositionEmbedding, ReversibleEmbedding)


_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_T = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
           keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRACED = (
    keras.layers.Dense, keras.layers.EinsumDense, keras.layers.MultiHeadAttention,
    Router, Experts,
) + _CONV + _CONV_T + _DEPTHWISE + _SEPARABLE


def _einsum_contracted(equation, kernel_shape):
    """Product of the kernel dims summed over by an EinsumDense equation."""
    match = re.match(r"^([\w.]+),(\w+)->([\w.]+)$", equation.replace(" ", ""))
    if not match:  # pragma: no cover - keras validates equations
        raise ValueError(f"Cannot parse EinsumDense equation {equation!r}.")
    kernel_letters, output_letters = match.group(2), match.group(3)
    return _size(
        d for letter, d in zip(kernel_letters, kernel_shape) if letter not in output_letters
    )


def _call_flops(layer, bound, output_shape):
    """Forward FLOPs of one recorded call, for the whole traced batch."""
    if isinstance(layer, Router):  # the router counts its own (e.g. Soft MoE's mixing)
        return layer.flops(_size(bound["inputs"][:-1]), int(bound["inputs"][-1]))
    if isinstance(layer, Experts):
        # (E, N, D) padded buffers, or (rows, D) expert-sorted rows on the
        # dropless ragged path (each row goes through one expert).
        x_shape = bound["inputs"]
        kernels = [layer.kernel_in, layer.kernel_out]
        if layer.gated:
            kernels.append(layer.kernel_gate)
        per_expert = sum(_size(k.shape) for k in kernels) // layer.num_experts
        rows = int(x_shape[0]) if len(x_shape) == 2 else layer.num_experts * int(x_shape[1])
        return 2 * rows * per_expert
    if isinstance(layer, keras.layers.MultiHeadAttention):
        query = bound["query"]
        key = bound.get("key") or bound["value"]
        q_len = _size(query[1:-1])
        k_len = _size(key[1:-1])
        heads = layer.num_heads
        per_example = 2 * q_len * k_len * heads * (layer.key_dim + layer.value_dim)
        return int(query[0]) * per_example
    if isinstance(layer, keras.layers.EinsumDense):
        return 2 * _size(output_shape) * _einsum_contracted(layer.equation, layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return 2 * _size(output_shape) * int(layer.kernel.shape[0])
    if isinstance(layer, _CONV_T):
        in_shape = bound["inputs"]
        channels_axis = -1 if layer.data_format == "channels_last" else 1
        positions = _size(in_shape) // int(in_shape[channels_axis])
        return 2 * positions * _size(layer.kernel.shape)
    if isinstance(layer, _SEPARABLE):
        positions = _size(output_shape) // layer.filters
        kernels = _size(layer.depthwise_kernel.shape) + _size(layer.pointwise_kernel.shape)
        return 2 * positions * kernels
    if isinstance(layer, _DEPTHWISE):
        kernel = layer.kernel
        positions = _size(output_shape) // (int(kernel.shape[-2]) * int(kernel.shape[-1]))
        return 2 * positions * _size(kernel.shape)
    if isinstance(layer, _CONV):
        positions = _size(output_shape) // layer.filters
        return 2 * positions * _size(layer.kernel.shape)
    return 0  # pragma: no cover


def _shape_of(value):
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


# ----------------------------------------------------------------------------
# Tracing
# ----------------------------------------------------------------------------
class _CallRecorder:
    """Temporarily wraps `call` of the given layers to record shapes."""

    def __init__(self, named_layers):
        self.named_layers = named_layers
        self.records = []  # (path, layer, bound shapes, output shape)

    def __enter__(self):
        self._saved = []
        for path, layer in self.named_layers:
            original = layer.call
            signature = inspect.signature(original)
            had_own = "call" in layer.__dict__
            self._saved.append((layer, had_own, layer.__dict__.get("call")))
            layer.__dict__["call"] = self._wrap(path, layer, original, signature)
        return self

    def _wrap(self, path, layer, original, signature):
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            try:
                arguments = signature.bind(*args, **kwargs).arguments
            except TypeError:  # pragma: no cover - the call above succeeded
                arguments = {}
            shapes = {name: _shape_of(value) for name, value in arguments.items()}
            first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
            if isinstance(outputs, dict):
                first = None
            self.records.append((path, layer, shapes, _shape_of(first)))
            return outputs

        return call

    def __exit__(self, *exc):
        for layer, had_own, previous in self._saved:
            if had_own:
                layer.__dict__["call"] = previous
            else:
                layer.__dict__.pop("call", None)
        return False


def _symbolic_inputs(model):
    """The symbolic input structure of a functional model (or of a layer
    called in one), else None."""
    try:
        return model.input
    except (AttributeError, ValueError):
        return None


def _example_inputs(model, input_shape, batch):
    """A constant batch matching the model's inputs, and the per-example
    shape(s) used."""
    struct = _symbolic_inputs(model)
    if input_shape is not None:
        shapes = input_shape
        dtypes = None
        if struct is not None:
            dtypes = keras.tree.map_structure(lambda t: t.dtype, struct)
    else:
        if struct is None:
            raise ValueError(
                f"Cannot infer the input shape of model '{model.name}' (it has no "
                "symbolic inputs); pass `input_shape`, the per-example shape without the "
                "batch dimension, e.g. input_shape=(224, 224, 3)."
            )
        shapes = keras.tree.map_structure(lambda t: tuple(t.shape[1:]), struct)
        dtypes = keras.tree.map_structure(lambda t: t.dtype, struct)

    def is_shape(value):
        return isinstance(value, (tuple, list)) and all(
            d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool))
            for d in value
        )

    def make(shape, dtype):
        if any(d is None for d in shape):
            raise ValueError(
                f"Model '{model.name}' has an input of unknown size {tuple(shape)}; pass "
                "`input_shape` with every dimension known (without the batch), e.g. "
                "input_shape=(224, 224, 3)."
            )
        dtype = keras.backend.standardize_dtype(dtype or "float32")
        fill = 0 if "float" in dtype else 1
        return np.full((batch,) + tuple(int(d) for d in shape), fill, dtype=dtype)

    if is_shape(shapes):
        dtype = None
        if dtypes is not None and not isinstance(dtypes, (dict, list, tuple)):
            dtype = dtypes
        elif isinstance(dtypes, (list, tuple)) and len(dtypes) == 1:
            dtype = dtypes[0]
        return make(shapes, dtype), tuple(shapes)
    if isinstance(shapes, dict):
        return (
            {k: make(s, (dtypes or {}).get(k) if isinstance(dtypes, dict) else None)
             for k, s in shapes.items()},
            {k: tuple(s) for k, s in shapes.items()},
        )
    if isinstance(shapes, (list, tuple)):
        types = dtypes if isinstance(dtypes, (list, tuple)) else [None] * len(shapes)
        return [make(s, t) for s, t in zip(shapes, types)], [tuple(s) for s in shapes]
    raise ValueError(
        "Argument `input_shape` must be a per-example shape tuple (e.g. (224, 224, 3)), "
        f"or a list/dict of them for a multi-input model; received {input_shape!r}."
    )


def _forward_for_shapes(model, data):
    """Run `model` in inference mode once, only for the shapes it sees.

    Under JAX the pass is traced with `jax.eval_shape` (nothing is compiled
    or computed; eager JAX would compile every op for these shapes); the
    other backends run it eagerly on the small batch.
    """
    if keras.backend.backend() == "jax":
        import jax  # only under the JAX backend, which has it installed

        jax.eval_shape(lambda batch: model(batch, training=False), data)
    else:
        model(data, training=False)


def _trace_batch(moe_layers):
    """Smallest batch whose tokens split into every MoE layer's groups."""
    batch = 1
    for layer in moe_layers:
        tokens = getattr(layer, "_tokens_per_example", None)
        group = layer.routing_group_size if layer.built else None
        if tokens and group:
            batch = math.lcm(batch, group // math.gcd(group, tokens))
    return batch


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------
def profile(model, input_shape=None):
    """Profile parameters and FLOPs of a Keras model with sparse MoE layers.

    Works for any Keras model or layer; `SparseMoE` layers are found at any
    depth. One forward pass runs in inference mode on a constant batch (of
    1 example, or the fewest examples that fill the MoE routing groups) to
    read the shapes; no weight is changed. Conventions for "active"
    parameters and FLOPs are in the module docstring.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.
        input_shape: None (read from the model's symbolic inputs), or the
            per-example input shape without the batch dimension, e.g.
            `(224, 224, 3)` (a list/dict of shapes for multi-input models).
            Needed for subclassed models and inputs of unknown size.

    Returns:
        A `ModelProfile` (print it for a table; `to_dict()` for JSON).

    Example:
    >>> import keras
    >>> from keras_sparse_moe import SparseMoE
    >>> inputs = keras.Input((16, 32))
    >>> outputs = SparseMoE(num_experts=8, intermediate_dim=64, top_k=2)(inputs)
    >>> result = profile(keras.Model(inputs, outputs))
    >>> result.params_total, result.params_active
    (33792, 8640)
    >>> result.moe_layers[0].capacity_eval
    5
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a keras.Model or keras.layers.Layer; received "
            f"{type(model).__name__}."
        )
    named = _walk(model)
    moe_layers = [layer for _, layer in named if isinstance(layer, SparseMoE)]
    if isinstance(model, SparseMoE):
        moe_layers.insert(0, model)
    if not model.built or any(not layer.built for layer in moe_layers):
        if input_shape is None and _symbolic_inputs(model) is None:
            raise ValueError(
                f"Model '{model.name}' is not built; pass `input_shape` (per example, "
                "without the batch dimension) so that it can be built."
            )
        data, _ = _example_inputs(model, input_shape, 1)
        _forward_for_shapes(model, data)
        named = _walk(model)
        moe_layers = [layer for _, layer in named if isinstance(layer, SparseMoE)]
        if isinstance(model, SparseMoE):
            moe_layers.insert(0, model)

    batch = _trace_batch(moe_layers)
    data, per_example_shape = _example_inputs(model, input_shape, batch)
    traced = [(path, layer) for path, layer in named if isinstance(layer, _TRACED)]
    if isinstance(model, _TRACED):
        traced.append((model.name, model))
    try:
        with _CallRecorder(traced) as recorder:
            _forward_for_shapes(model, data)
    except ValueError:
        raise
    except Exception as error:  # backend errors from a wrong input_shape
        raise ValueError(
            f"Could not run model '{model.name}' on a batch of shape(s) "
            f"{keras.tree.map_structure(lambda a: a.shape, data)} to profile it: {error}. "
            "Check `input_shape`."
        ) from error

    calls = {}  # id(layer) -> [(input shape, flops)] in call order
    total_flops = 0
    for _, layer, bound, output_shape in recorder.records:
        flops = _call_flops(layer, bound, output_shape)
        total_flops += flops
        calls.setdefault(id(layer), []).append((bound.get("inputs"), flops))
    total_flops /= batch

    paths = {id(layer): path for path, layer in named}
    if isinstance(model, SparseMoE):
        paths[id(model)] = model.name
    moe_profiles = [
        _moe_layer_profile(
            paths[id(layer)], layer, calls.get(id(layer.router), []),
            calls.get(id(layer.experts), []), batch,
        )
        for layer in moe_layers
    ]

    params_total = _weights_size(model.trainable_weights)
    non_trainable = _weights_size(model.non_trainable_weights)
    params_active = params_total - sum(m.params - m.params_active for m in moe_profiles)
    flops_train = total_flops + sum(m.flops_train - m.flops for m in moe_profiles)
    known = _known_free_types() + _TRACED
    # Leaf layers of unknown type owning a weight matrix might hide matmuls.
    uncounted = [
        path
        for path, layer in named
        if not _children(layer)
        and any(len(w.shape) >= 2 for w in layer.weights)
        and not isinstance(layer, known)
    ]
    return ModelProfile(
        name=model.name,
        input_shape=per_example_shape,
        params_total=int(params_total),
        params_non_trainable=int(non_trainable),
        params_active=int(params_active),
        flops=int(round(total_flops)),
        flops_train=int(round(flops_train)),
        moe_layers=moe_profiles,
        uncounted_layers=uncounted,
    )


def _moe_layer_profile(path, layer, router_calls, expert_calls, batch):
    """Profile of one SparseMoE layer from its router and experts calls.

    Each call's group size `S` and number of groups `G` come from the
    router input (G, S, D), its inference capacity from the experts input
    (E, G * C, D); the training capacity is recomputed from `S`. A layer
    called several times per forward pass (e.g. a tower shared by images
    and text) sums the FLOPs of all calls and shows the first call's group
    size and capacities.
    """
    num_experts = layer.num_experts
    router = layer.router
    ragged_eval = router.uses_ragged_experts(training=False)
    flops = flops_train = 0.0
    shapes = []
    for (router_shape, router_flops), (experts_shape, experts_flops) in zip(
        router_calls, expert_calls
    ):
        groups, group = int(router_shape[0]), int(router_shape[1])
        # Expert rows computed at inference: every assignment on the dropless
        # ragged path (reported capacity: the group size, as dropless means),
        # every capacity slot otherwise.
        if ragged_eval:
            rows_eval = int(experts_shape[0])
            capacity_eval = group
        else:
            capacity_eval = int(experts_shape[1]) // groups
            rows_eval = num_experts * groups * capacity_eval
        capacity_train = router.capacity(True, group)
        rows_train = router.expert_rows(groups, group, training=True)
        shapes.append((group, capacity_train, capacity_eval))
        flops += router_flops + experts_flops
        flops_train += router_flops + experts_flops * rows_train / rows_eval
    if shapes:
        group, capacity_train, capacity_eval = shapes[0]
    else:  # never called in the forward pass
        group = layer.routing_group_size
        capacity_train, capacity_eval = layer.capacity(True), layer.capacity(False)
    params_router = _weights_size(layer.router.trainable_weights)
    params_experts = _weights_size(layer.experts.trainable_weights)
    per_expert = params_experts // num_experts
    per_token = router.experts_per_token(group, training=False)
    return MoELayerProfile(
        name=path,
        router=layer.router_type,
        num_experts=num_experts,
        top_k=router.top_k,
        group_size=group,
        capacity_train=capacity_train,
        capacity_eval=capacity_eval,
        experts_per_token=per_token,
        params=params_router + params_experts,
        params_router=params_router,
        params_per_expert=per_expert,
        params_active=int(round(params_router + per_token * per_expert)),
        flops=int(round(flops / batch)),
        flops_train=int(round(flops_train / batch)),
    )
