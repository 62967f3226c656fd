"""Parameter and FLOP profile of Keras models with sparse MoE layers.

`profile(model)` works for any Keras model (functional, sequential or
subclassed) containing `SparseMoE` layers, at any nesting depth: it walks
the sublayers, runs one forward pass on a tiny constant batch while
recording the input/output shape of every matmul-carrying layer, and counts
FLOPs analytically from those shapes and the layers' weights.
`profile_config(backbone_cls, config)` returns the same numbers for a
`MoEViTBackbone` or keras-hub `ViTBackbone` config without allocating any
weight (for paper-sized presets).

Conventions (also in `ModelProfile`'s docstring):

- **Parameters** are trainable weights; non-trainable variables (e.g. the
  routing statistics of `SparseMoE`) are reported apart.
- **Active parameters per token** are the parameters that a token's output
  depends on at inference: every non-expert weight (embeddings, attention,
  norms, dense MLPs, heads, the routers), plus per `SparseMoE` layer
  `experts_per_token` experts' weights instead of all `num_experts`:
  `top_k` for token choice (an upper bound: a dropped assignment uses one
  expert less), `num_experts * capacity_eval / group_size` for expert choice
  (the average number of experts that pick a token), and all `num_experts`
  for Soft MoE (every slot mixes all tokens of the group and every token
  mixes all slots, so every expert touches every token; its *compute* per
  token is `num_experts * slots_per_expert / group_size` experts, which the
  FLOPs show).
- **FLOPs** are per example of the forward pass, 1 multiply-add = 2 FLOPs,
  counting only matrix products: `Dense`/`EinsumDense`/convolution kernels
  (patch embedding, attention Q/K/V/output projections, MLPs, heads), the
  attention score (`QK^T`) and value (`AV`) products, router projections,
  the expert MLPs, and Soft MoE's dispatch and combine mixing products.
  Biases, norms, activations, softmax, top-k, gathers and scatters are not
  counted. Experts are counted on every capacity slot the layer computes,
  filled or not: `num_groups * num_experts * capacity` slots, which is the
  static cost of this implementation. A dropless token-choice layer
  (`capacity_factor=None`) on the padded path computes `group_size` slots
  per expert; on the ragged path (`dropless_impl`, JAX and PyTorch by
  default) it computes exactly `top_k` expert rows per token, and its
  capacity is reported as the group size. The figures therefore depend on
  the backend for dropless layers.
  `flops` uses the inference capacity (`eval_capacity_factor`),
  `flops_train` the training capacity (forward only; a backward pass costs
  about twice the forward).
"""

import dataclasses
import inspect
import math
import numbers
import re

import keras
import numpy as np

from keras_sparse_moe.layers.experts import Experts
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.router_registry import make_router
from keras_sparse_moe.layers.router_registry import router_option_names
from keras_sparse_moe.layers.sparse_moe import SparseMoE


# ----------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class MoELayerProfile:
    """Profile of one `SparseMoE` layer (see the module docstring).

    Attributes:
        name: path of the layer inside the profiled model, e.g.
            `"encoder_block_1/moe"`.
        router: `"token_choice"`, `"expert_choice"` or `"soft"`.
        num_experts: experts of the layer.
        top_k: experts per token (token/expert choice; 1 for soft).
        group_size: tokens per routing group.
        capacity_train, capacity_eval: slots per expert and group in
            training and at inference (soft: `slots_per_expert`).
        experts_per_token: experts counted as active per token.
        params: trainable parameters of the layer (router + all experts).
        params_router: trainable parameters of the router.
        params_per_expert: trainable parameters of one expert.
        params_active: `params_router + experts_per_token * params_per_expert`.
        flops: FLOPs per example at inference capacity.
        flops_train: FLOPs per example at training capacity (forward).
    """

    name: str
    router: str
    num_experts: int
    top_k: int
    group_size: int
    capacity_train: int
    capacity_eval: int
    experts_per_token: float
    params: int
    params_router: int
    params_per_expert: int
    params_active: int
    flops: int
    flops_train: int

    def to_dict(self):
        """The profile as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ModelProfile:
    """Parameters and FLOPs of a model (see the module docstring for the
    conventions).

    Attributes:
        name: model name.
        input_shape: per-example input shape(s) used for the FLOPs.
        params_total: trainable parameters.
        params_non_trainable: non-trainable variables' elements.
        params_active: trainable parameters active per token.
        flops: forward FLOPs per example at inference capacity.
        flops_train: forward FLOPs per example at training capacity.
        moe_layers: list of `MoELayerProfile`, in layer order.
        uncounted_layers: paths of layers of a type this profiler does not
            know that own a weight matrix (rank >= 2), so may hide matrix
            products that are not in `flops`.
    """

    name: str
    input_shape: object
    params_total: int
    params_non_trainable: int
    params_active: int
    flops: int
    flops_train: int
    moe_layers: list
    uncounted_layers: list = dataclasses.field(default_factory=list)

    @property
    def gflops(self):
        """`flops / 1e9`."""
        return self.flops / 1e9

    @property
    def num_moe_layers(self):
        return len(self.moe_layers)

    def to_dict(self):
        """The profile as a plain (JSON-serialisable) dict."""
        result = dataclasses.asdict(self)
        result["input_shape"] = _jsonable_shape(self.input_shape)
        return result

    def __str__(self):
        lines = [
            f"Model: {self.name}  (input per example: {self.input_shape})",
            f"  parameters (trainable):     {self.params_total:>16,}",
            f"  parameters active / token:  {self.params_active:>16,}",
            f"  non-trainable variables:    {self.params_non_trainable:>16,}",
            f"  GFLOPs / example (eval):    {self.flops / 1e9:>16.3f}",
            f"  GFLOPs / example (train):   {self.flops_train / 1e9:>16.3f}",
            f"  MoE layers:                 {len(self.moe_layers):>16}",
        ]
        if self.moe_layers:
            width = max(len("layer"), *(len(m.name) for m in self.moe_layers))
            header = (
                f"  {'layer':<{width}} {'router':<13} {'E':>4} {'k':>2} {'group':>6} "
                f"{'cap tr/ev':>10} {'params':>13} {'active':>12} {'GFLOPs':>9}"
            )
            lines += ["", header, "  " + "-" * (len(header) - 2)]
            for moe in self.moe_layers:
                capacity = f"{moe.capacity_train}/{moe.capacity_eval}"
                lines.append(
                    f"  {moe.name:<{width}} {moe.router:<13} {moe.num_experts:>4} {moe.top_k:>2} "
                    f"{moe.group_size:>6} {capacity:>10} {moe.params:>13,} "
                    f"{moe.params_active:>12,} {moe.flops / 1e9:>9.4f}"
                )
        if self.uncounted_layers:
            lines.append(
                "  FLOPs not counted for (unknown layer types): "
                + ", ".join(self.uncounted_layers)
            )
        return "\n".join(lines)


def _jsonable_shape(shape):
    if isinstance(shape, dict):
        return {k: _jsonable_shape(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple, dict)):
        return [_jsonable_shape(s) for s in shape]
    return list(shape) if isinstance(shape, (list, tuple)) else shape


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
    try:  # keras-hub lookups (ReversibleEmbedding is a lookup when embedding).
        from keras_hub.layers import PositionEmbedding
        from keras_hub.layers import ReversibleEmbedding

        types += (PositionEmbedding, ReversibleEmbedding)
    except ImportError:  # pragma: no cover
        pass
    return types


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
        import jax

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


# ----------------------------------------------------------------------------
# From a config, without weights
# ----------------------------------------------------------------------------
def _init_defaults(cls):
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _vit_dense_profile(args, use_class_token, biases):
    """Embedding, per-block and final parameter/FLOP counts of a ViT."""
    height, width, channels = (int(v) for v in args["image_shape"])
    patch = args["patch_size"]
    patch = (patch, patch) if isinstance(patch, numbers.Integral) else tuple(patch)
    dim, mlp, heads = int(args["hidden_dim"]), int(args["mlp_dim"]), int(args["num_heads"])
    patches = (height // patch[0]) * (width // patch[1])
    tokens = patches + int(use_class_token)
    conv_kernel = patch[0] * patch[1] * channels * dim
    embedding_params = conv_kernel + (dim if biases["patch"] else 0) + tokens * dim
    embedding_params += dim if use_class_token else 0
    key_dim = dim // heads
    attention_params = 4 * dim * heads * key_dim
    attention_params += (3 * heads * key_dim + dim) if biases["mha"] else 0
    block_params = attention_params + 4 * dim  # + two LayerNorms
    mlp_params = 2 * dim * mlp + ((mlp + dim) if biases["mlp"] else 0)
    block_flops = 2 * tokens * 4 * dim * heads * key_dim + 2 * tokens * tokens * heads * 2 * key_dim
    return {
        "tokens": tokens,
        "dim": dim,
        "mlp": mlp,
        "embedding_params": embedding_params,
        "embedding_flops": 2 * patches * conv_kernel,
        "block_params": block_params,
        "block_flops": block_flops,
        "mlp_params": mlp_params,
        "mlp_flops": 2 * tokens * 2 * dim * mlp,
        "final_params": 2 * dim,
    }


def _moe_config_profile(name, moe, tokens, dim, mlp):
    experts = int(moe["num_experts"])
    group = int(moe["group_size"] or tokens)
    per_expert_kernels = dim * mlp * (2 if moe["gated"] else 1) + mlp * dim
    per_expert = per_expert_kernels + ((mlp + dim) if moe["use_bias"] else 0)
    # The router (no weights) answers its own capacity and cost questions.
    options = {key: value for key, value in moe.items() if key in router_option_names()}
    router = make_router(moe["router"], experts, int(moe["top_k"]), moe["capacity_factor"],
                         moe["eval_capacity_factor"], **options)
    capacity_train, capacity_eval = router.capacity(True, group), router.capacity(False, group)
    params_router = router.num_parameters(dim)
    router_flops = router.flops(tokens, dim)
    groups_per_example = tokens / group

    def expert_flops(training):
        rows = router.expert_rows(1, group, training) * groups_per_example
        return 2 * rows * per_expert_kernels

    per_token = router.experts_per_token(group, training=False)
    flops = router_flops + expert_flops(False)
    flops_train = router_flops + expert_flops(True)
    return MoELayerProfile(
        name=name,
        router=moe["router"],
        num_experts=experts,
        top_k=router.top_k,
        group_size=group,
        capacity_train=capacity_train,
        capacity_eval=capacity_eval,
        experts_per_token=per_token,
        params=params_router + experts * per_expert,
        params_router=params_router,
        params_per_expert=per_expert,
        params_active=int(round(params_router + per_token * per_expert)),
        flops=int(round(flops)),
        flops_train=int(round(flops_train)),
    )


def _profile_moe_vit_config(cls, config):
    from keras_sparse_moe.models.moe_vit.moe_layer_schedule import block_moe_arguments
    from keras_sparse_moe.models.moe_vit.moe_layer_schedule import resolve_moe_layers
    from keras_sparse_moe.models.moe_vit.moe_layer_schedule import split_moe_kwargs

    from keras_sparse_moe.models.moe_vit.moe_vit_backbone import _check_image_shape
    from keras_sparse_moe.models.moe_vit.moe_vit_backbone import _check_stem_channels
    from keras_sparse_moe.models.moe_vit.moe_vit_backbone import stem_geometry

    args = {**_init_defaults(cls), **config}
    image_shape, patch = _check_image_shape(args["image_shape"], args["patch_size"])
    stem_channels = _check_stem_channels(args.get("stem_channels"), patch)
    # The stem's 3x3 convolutions; the patch embedding sees the last one's output.
    stem_params = stem_flops = 0
    channels = image_shape[2]
    for index in range(len(stem_channels)):
        (height, width, out_channels), _ = stem_geometry(
            image_shape, patch, stem_channels[:index + 1]
        )
        kernel = 3 * 3 * channels * out_channels
        stem_params += kernel + out_channels
        stem_flops += 2 * height * width * kernel
        channels = out_channels
    embedded_shape, embedded_patch = stem_geometry(image_shape, patch, stem_channels)
    use_class_token = args["pooling"] == "token"
    dense = _vit_dense_profile(
        {**args, "image_shape": embedded_shape, "patch_size": embedded_patch},
        use_class_token, {"patch": True, "mha": True, "mlp": True},
    )
    tokens, dim, mlp = dense["tokens"], dense["dim"], dense["mlp"]
    num_layers = int(args["num_layers"])
    moe_indices = resolve_moe_layers(args["moe_layers"], num_layers)
    shared, per_block = split_moe_kwargs(args["moe_kwargs"], moe_indices)
    base = {key: args[key] for key in
            ("num_experts", "top_k", "router", "capacity_factor", "eval_capacity_factor")}
    moe_defaults = _init_defaults(SparseMoE)

    params = stem_params + dense["embedding_params"] + dense["final_params"]
    flops = stem_flops + dense["embedding_flops"]
    non_trainable = 0
    moe_profiles = []
    for index in range(num_layers):
        params += dense["block_params"]
        flops += dense["block_flops"]
        if index not in moe_indices:
            params += dense["mlp_params"]
            flops += dense["mlp_flops"]
            continue
        moe = {**moe_defaults, **block_moe_arguments(index, base, shared, per_block)}
        moe_profile = _moe_config_profile(f"encoder_block_{index}/moe", moe, tokens, dim, mlp)
        moe_profiles.append(moe_profile)
        params += moe_profile.params
        non_trainable += 1 + moe_profile.num_experts  # routing statistics
    return _assemble(args.get("name") or cls.__name__, tuple(args["image_shape"]),
                     params, non_trainable, flops, moe_profiles)


def _profile_keras_hub_vit_config(cls, config):
    args = {**_init_defaults(cls), **config}
    if args.get("data_format") not in (None, "channels_last"):
        raise ValueError(
            "profile_config supports channels_last ViTBackbone configs only; received "
            f"data_format={args['data_format']!r}."
        )
    biases = {"patch": args["use_patch_bias"], "mha": args["use_mha_bias"],
              "mlp": args["use_mlp_bias"]}
    dense = _vit_dense_profile(args, args["use_class_token"], biases)
    layers = int(args["num_layers"])
    params = (dense["embedding_params"] + dense["final_params"]
              + layers * (dense["block_params"] + dense["mlp_params"]))
    flops = dense["embedding_flops"] + layers * (dense["block_flops"] + dense["mlp_flops"])
    return _assemble(args.get("name") or cls.__name__, tuple(args["image_shape"]),
                     params, 0, flops, [])


def _assemble(name, input_shape, params, non_trainable, dense_flops, moe_profiles):
    flops = dense_flops + sum(m.flops for m in moe_profiles)
    flops_train = dense_flops + sum(m.flops_train for m in moe_profiles)
    active = params - sum(m.params - m.params_active for m in moe_profiles)
    return ModelProfile(
        name=name,
        input_shape=input_shape,
        params_total=int(params),
        params_non_trainable=int(non_trainable),
        params_active=int(active),
        flops=int(round(flops)),
        flops_train=int(round(flops_train)),
        moe_layers=moe_profiles,
        uncounted_layers=[],
    )


def profile_config(backbone_cls, config):
    """`profile(backbone_cls(**config))` without building the model.

    Computed analytically for `MoEViTBackbone` and keras-hub `ViTBackbone`
    configs (no weight is allocated, so paper-sized presets are cheap);
    any other class is built and profiled with `profile`.

    Args:
        backbone_cls: the backbone class.
        config: dict of constructor arguments (e.g. from `get_config()` or a
            preset); missing arguments take the constructor defaults.

    Returns:
        A `ModelProfile` equal to `profile(backbone_cls(**config))` (the
        model name is the config's `name` or the class's default name).

    Example:
    >>> from keras_sparse_moe.models import MoEViTBackbone
    >>> result = profile_config(MoEViTBackbone, {
    ...     "image_shape": (224, 224, 3), "patch_size": 16, "num_layers": 12,
    ...     "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072,
    ...     "num_experts": 8, "top_k": 2, "moe_layers": "every_2"})
    >>> round(result.params_total / 1e6), len(result.moe_layers)
    (284, 6)
    """
    if not inspect.isclass(backbone_cls):
        raise ValueError(
            f"Argument `backbone_cls` must be a class; received {backbone_cls!r}."
        )
    if not isinstance(config, dict):
        raise ValueError(f"Argument `config` must be a dict; received {config!r}.")
    from keras_hub.models import ViTBackbone

    from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone

    if backbone_cls is MoEViTBackbone:
        _check_config_keys(backbone_cls, config)
        return _profile_moe_vit_config(backbone_cls, config)
    if backbone_cls is ViTBackbone:
        _check_config_keys(backbone_cls, config)
        return _profile_keras_hub_vit_config(backbone_cls, config)
    return profile(backbone_cls(**config))


def _check_config_keys(cls, config):
    allowed = set(_init_defaults(cls)) | set(
        name for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"
    ) | {"name", "trainable", "dtype"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(
            f"Argument `config` has unknown {cls.__name__} arguments {unknown}; allowed: "
            f"{sorted(allowed - {'kwargs'})}."
        )
