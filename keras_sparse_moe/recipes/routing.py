"""Which experts the tokens of each class go to (V-MoE's routing figures).

`routing_by_class` runs a model on labelled images in inference mode (no
noise, eval capacity), records the routing of every `SparseMoE` layer (the
statistics of `SparseMoE.routing_stats`) and tallies, per class, the share of
the class's token assignments each expert receives. The pass runs through
Keras' compiled predict path (`jax.jit`, `tf.function`), not op by op: on JAX
an eager pass compiles every operation separately, which took minutes.
"""

import contextlib

import keras
import numpy as np

from keras_sparse_moe.layers.sparse_moe import SparseMoE


class _Compiled(keras.Model):
    """`function(inputs)` run by `predict_on_batch` (compiled once per input
    shape); `owner` is tracked so that its weights are the model's state."""

    def __init__(self, function, owner, name="routing_probe", **kwargs):
        super().__init__(name=name, **kwargs)
        self.owner = owner
        self._function = function
        self.built = owner.built  # no symbolic trace before the compiled one

    def call(self, inputs):
        return self._function(inputs)


def moe_layer_paths(model):
    """`[(name, layer)]` for every `SparseMoE` layer of `model`, in
    traversal order, named by their path below the model with the prefix
    shared by all of them removed (e.g. `"encoder_block_1/moe"`).

    Example:
    >>> import keras
    >>> from keras_sparse_moe import SparseMoE
    >>> inputs = keras.Input((4, 8))
    >>> model = keras.Model(inputs, SparseMoE(4, 16, name="moe")(inputs))
    >>> [name for name, _ in moe_layer_paths(model)]
    ['moe']
    """
    found = []

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = prefix + (child.name,)
            if isinstance(child, SparseMoE):
                found.append((path, child))
            else:
                walk(child, path)

    walk(model, ())
    if not found:
        return []
    shared = 0
    shortest = min(len(path) for path, _ in found)
    while shared < shortest - 1 and len({path[shared] for path, _ in found}) == 1:
        shared += 1
    if len(found) == 1:
        shared = max(0, len(found[0][0]) - 2)
    return [("/".join(path[shared:]), layer) for path, layer in found]


@contextlib.contextmanager
def record_inputs(layers):
    """Temporarily wrap `call` of `layers` to record their first input.

    Yields a dict `{id(layer): [numpy arrays, one per call]}`. The model
    must be called eagerly (e.g. `model(x)`, not `predict`).

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe import SparseMoE
    >>> moe = SparseMoE(num_experts=2, intermediate_dim=4)
    >>> with record_inputs([moe]) as seen:
    ...     _ = moe(np.ones((1, 3, 4), "float32"))
    >>> seen[id(moe)][0].shape
    (1, 3, 4)
    """
    from keras import ops

    records = {id(layer): [] for layer in layers}
    saved = []
    for layer in layers:
        original = layer.call
        saved.append((layer, "call" in layer.__dict__, layer.__dict__.get("call")))

        def call(inputs, *args, _original=original, _name=id(layer), **kwargs):
            records[_name].append(np.asarray(ops.convert_to_numpy(inputs)))
            return _original(inputs, *args, **kwargs)

        layer.__dict__["call"] = call
    try:
        yield records
    finally:
        for layer, had_own, previous in saved:
            if had_own:
                layer.__dict__["call"] = previous
            else:
                layer.__dict__.pop("call", None)


def _class_shares(per_token, token_labels, num_classes):
    """Row-normalised (num_classes, E) matrix from per-token expert weights."""
    totals = np.zeros((num_classes, per_token.shape[-1]), dtype=np.float64)
    np.add.at(totals, token_labels, per_token)
    sums = totals.sum(axis=1, keepdims=True)
    return np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0)


def routing_by_class(model, images, labels, num_classes, batch_size=64):
    """Per MoE layer, the share of each class's tokens routed to each expert.

    Args:
        model: a Keras model holding `SparseMoE` layers; it is called on
            `images` as given (preprocess them first).
        images: array (N, ...) of model inputs.
        labels: int array (N,).
        num_classes: int.
        batch_size: images per forward pass (must satisfy the layers'
            routing-group constraints; the default suits per-image groups).
            All batches have this size (one compiled shape): the images
            beyond the last full batch are left out.

    Returns:
        `{layer name: dict}` with `by_class` (num_classes, E) (row c: share
        of class c's top-k assignments, before capacity, going to each expert;
        rows sum to 1), `expert_fraction` (E,), `load_imbalance`,
        `dropped_fraction` (at eval capacity) and `kind` ("assignments" for
        token-choice routers, "router_probs" for the others, whose shares are
        mean router probabilities).

    Example:
    >>> import keras, numpy as np
    >>> from keras_sparse_moe import SparseMoE
    >>> inputs = keras.Input((4, 8))
    >>> model = keras.Model(inputs, SparseMoE(4, 16, top_k=1)(inputs))
    >>> out = routing_by_class(model, np.random.rand(6, 4, 8).astype("float32"),
    ...                        np.array([0, 1, 2, 0, 1, 2]), 3)
    >>> next(iter(out.values()))["by_class"].shape
    (3, 4)
    """
    named = moe_layer_paths(model)
    if not named:
        return {}
    layers = [layer for _, layer in named]
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)

    if len(images) > batch_size:  # equal batches: one compiled shape, exact means
        images = images[: len(images) - len(images) % batch_size]
    else:
        batch_size = len(images)
    labels = labels[: len(images)]

    def routings(x):
        with _record_routing(layers) as seen:
            model(x, training=False)
        return [seen[id(layer)][0] for layer in layers]

    forward = _Compiled(routings, model)
    batches = [forward.predict_on_batch(images[start : start + batch_size])
               for start in range(0, len(images), batch_size)]
    result = {}
    for i, (name, layer) in enumerate(named):
        stats = _merge([batch[i] for batch in batches], layer.num_experts)
        per_example = int(np.prod(stats["router_probs"].shape[:-1])) // len(images)
        token_labels = np.repeat(labels, per_example)
        if "expert_index" in stats:
            index = stats["expert_index"].reshape(-1, stats["expert_index"].shape[-1])
            weights = np.zeros((index.shape[0], layer.num_experts))
            for k in range(index.shape[1]):
                np.add.at(weights, (np.arange(index.shape[0]), index[:, k]), 1.0)
            kind = "assignments"
        else:
            weights = stats["router_probs"].reshape(-1, layer.num_experts)
            kind = "router_probs"
        result[name] = {
            "by_class": _class_shares(weights, token_labels, num_classes),
            "expert_fraction": np.asarray(stats["expert_fraction"], dtype=np.float64),
            "load_imbalance": float(stats["load_imbalance"]),
            "dropped_fraction": float(stats["dropped_fraction"]),
            "kind": kind,
        }
    return result



@contextlib.contextmanager
def _record_routing(layers):
    """Temporarily make `layers` record the routing dict of each call
    (`SparseMoE.call(..., return_routing=True)`) as tensors."""
    records = {id(layer): [] for layer in layers}
    for layer in layers:
        original = layer.call

        def call(inputs, *args, _original=original, _name=id(layer), **kwargs):
            wanted = kwargs.pop("return_routing", False)
            outputs, routing = _original(inputs, *args, return_routing=True, **kwargs)
            records[_name].append(routing)
            return (outputs, routing) if wanted else outputs

        layer.__dict__["call"] = call
    try:
        yield records
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def _merge(routings, num_experts):
    """The statistics of `SparseMoE.routing_stats` over equal-sized batches:
    per-token arrays concatenated, per-batch shares averaged."""
    fraction = np.mean([np.asarray(r["expert_fraction"], np.float64) for r in routings], axis=0)
    stats = {
        "expert_fraction": fraction,
        "load_imbalance": float(num_experts * np.max(fraction)),
        "dropped_fraction": float(np.mean([np.asarray(r["dropped_fraction"]) for r in routings])),
        "router_probs": np.concatenate([np.asarray(r["router_probs"]) for r in routings]),
    }
    if "expert_index" in routings[0]:
        stats["expert_index"] = np.concatenate([np.asarray(r["expert_index"]) for r in routings])
    return stats
