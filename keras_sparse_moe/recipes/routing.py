"""Which experts the tokens of each class go to (V-MoE's routing figures).

`routing_by_class` runs a model on labelled images in inference mode (no
noise, eval capacity), records the routing of every `SparseMoE` layer (the
statistics of `SparseMoE.routing_stats`) and tallies, per class, the share of
the class's token assignments each expert receives. The pass runs through
Keras' compiled predict path (`jax.jit`, `tf.function`), not op by op: on JAX
an eager pass compiles every operation separately, which took minutes.

`RoutingForward` is that pass returning the model's outputs too, and
`RoutingTally` adds up its batches: `keras-sparse-moe evaluate` gets its
predictions and its routing statistics from one compiled pass.
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

    def wrap(original, seen):
        def call(inputs, *args, **kwargs):
            seen.append(np.asarray(ops.convert_to_numpy(inputs)))
            return original(inputs, *args, **kwargs)

        return call

    return _wrapped_calls(layers, wrap)


@contextlib.contextmanager
def _wrapped_calls(layers, wrap):
    """Temporarily replace `call` of each of `layers` by `wrap(its call, its
    records)`, where its records are its list in the yielded
    `{id(layer): [...]}`; each layer's own `call` comes back afterwards."""
    records = {id(layer): [] for layer in layers}
    saved = [(layer, layer.__dict__.get("call")) for layer in layers]
    for layer in layers:
        layer.__dict__["call"] = wrap(layer.call, records[id(layer)])
    try:
        yield records
    finally:
        for layer, previous in saved:
            if previous is None:
                layer.__dict__.pop("call", None)
            else:
                layer.__dict__["call"] = previous


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
            All batches have this size (one compiled shape): the last one is
            padded, and the padding's tokens are masked in every MoE layer
            (they take no expert capacity and are not counted), so every
            image counts and the statistics are those of one call on all
            images.

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
    if not moe_layer_paths(model):
        return {}
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    batch_size = min(batch_size, len(images))
    forward = RoutingForward(model)
    tally = RoutingTally(forward, num_classes)
    for start in range(0, len(images), batch_size):
        batch, valid = pad_batch(images[start : start + batch_size], batch_size)
        _, routings = forward(batch, valid)
        tally.add(routings, valid, labels[start : start + batch_size])
    return tally.result()


def pad_batch(images, size):
    """`images` padded with zeros to `size` rows, and the (size,) bool mask
    of the real rows (for `RoutingForward`).

    Example:
    >>> import numpy as np
    >>> batch, valid = pad_batch(np.ones((3, 2)), 4)
    >>> batch.shape, valid.tolist()
    ((4, 2), [True, True, True, False])
    """
    images = np.asarray(images)
    n = len(images)
    valid = np.arange(size) < n
    if n < size:
        images = np.concatenate([images, np.zeros((size - n,) + images.shape[1:], images.dtype)])
    return images, valid


# The routing entries `RoutingForward` returns (the rest stays in the graph).
_ROUTING_KEYS = ("expert_fraction", "dropped_fraction", "router_probs", "expert_index")


class RoutingForward:
    """A model's inference forward pass that also returns the routing of its
    MoE layers, compiled as the model's own `predict_on_batch` is (one
    `jax.jit` / `tf.function` per input shape, eager where the model runs
    eagerly): predictions and routing statistics come from one pass.

    Call it with a batch of model inputs and a bool (batch,) mask of the
    real rows (`pad_batch`): the tokens of padding rows are masked in every
    MoE layer, so they take no expert capacity from real tokens and are not
    counted in the routing statistics (their outputs are meaningless).

    Args:
        model: a Keras model (with or without `SparseMoE` layers), called
            on the inputs as given (preprocess them first).

    Returns (when called):
        `(outputs, routings)`: the model's outputs as NumPy and, per MoE
        layer (in `moe_layer_paths` order), a dict of NumPy arrays
        `expert_fraction`, `dropped_fraction`, `router_probs` and, for
        token-choice routers, `expert_index`.

    Example:
    >>> import keras, numpy as np
    >>> from keras_sparse_moe import SparseMoE
    >>> inputs = keras.Input((4, 8))
    >>> model = keras.Model(inputs, SparseMoE(4, 16, top_k=1)(inputs))
    >>> batch, valid = pad_batch(np.random.rand(3, 4, 8).astype("float32"), 4)
    >>> outputs, routings = RoutingForward(model)(batch, valid)
    >>> outputs.shape, routings[0]["expert_index"].shape
    ((4, 4, 8), (4, 4, 1))
    """

    def __init__(self, model):
        named = moe_layer_paths(model)
        self.names = [name for name, _ in named]
        self.layers = [layer for _, layer in named]
        layers = self.layers

        def forward(inputs):
            x, valid = inputs
            with _record_routing(layers, valid) as seen:
                outputs = model(x, training=False)
            routings = [seen[id(layer)][0] for layer in layers]
            return outputs, [{k: r[k] for k in _ROUTING_KEYS if k in r} for r in routings]

        self._compiled = _Compiled(forward, model)
        if getattr(model, "compiled", False):  # the model's own compile mode
            self._compiled.jit_compile = model.jit_compile
        self._compiled.run_eagerly = bool(getattr(model, "run_eagerly", False))

    def __call__(self, images, valid):
        outputs, routings = self._compiled.predict_on_batch((images, np.asarray(valid, bool)))
        return (np.asarray(outputs),
                [{k: np.asarray(v) for k, v in routing.items()} for routing in routings])


class RoutingTally:
    """Accumulates the batches of a `RoutingForward` into the statistics of
    `routing_by_class`: the per-token routing of the real rows, and the
    layers' per-batch shares weighted by their real rows (exact for batches
    of any size, as the padding is masked).

    Args:
        forward: the `RoutingForward` whose batches are added.
        num_classes: int.

    Example:
    >>> import keras, numpy as np
    >>> from keras_sparse_moe import SparseMoE
    >>> inputs = keras.Input((4, 8))
    >>> model = keras.Model(inputs, SparseMoE(4, 16, top_k=1, name="moe")(inputs))
    >>> forward = RoutingForward(model)
    >>> tally = RoutingTally(forward, num_classes=2)
    >>> batch, valid = pad_batch(np.random.rand(3, 4, 8).astype("float32"), 4)
    >>> tally.add(forward(batch, valid)[1], valid, labels=np.array([0, 1, 1]))
    >>> tally.examples, tally.result()["moe"]["by_class"].shape
    (3, (2, 4))
    """

    def __init__(self, forward, num_classes):
        self.names = list(forward.names)
        self.layers = list(forward.layers)
        self.num_classes = int(num_classes)
        self.examples = 0
        self._labels = []
        self._shares = []  # per batch: [(expert_fraction, dropped_fraction)] per layer
        self._tokens = [[] for _ in self.layers]  # per layer: per-token arrays of real rows

    def add(self, routings, valid, labels):
        """Add one batch: `routings` from `RoutingForward`, its `valid` row
        mask (real rows first, as `pad_batch` makes it) and the `labels` of
        the real rows."""
        labels = np.asarray(labels).reshape(-1)
        valid = np.asarray(valid, bool).reshape(-1)
        n = int(valid.sum())
        if len(labels) != n or not valid[:n].all():
            raise ValueError(
                f"Argument `labels` must hold one label per real row ({n}, the leading rows "
                f"of the batch); received {len(labels)} labels for the mask {valid.tolist()}."
            )
        shares = []
        for i, routing in enumerate(routings):
            shares.append((np.asarray(routing["expert_fraction"], np.float64),
                           float(routing["dropped_fraction"])))
            tokens = {}
            for key in ("router_probs", "expert_index"):
                if key in routing:
                    flat = np.asarray(routing[key]).reshape(-1, routing[key].shape[-1])
                    per_example = len(flat) // len(valid)  # the batch's tokens, flattened
                    tokens[key] = flat[: n * per_example]
            self._tokens[i].append(tokens)
        self._shares.append(shares)
        self._labels.append(labels)
        self.examples += n

    def result(self):
        """`{layer name: dict}` as returned by `routing_by_class` (empty
        before any batch)."""
        if not self.examples:
            return {}
        counts = np.array([len(labels) for labels in self._labels], np.float64)
        weights = counts / counts.sum()
        labels = np.concatenate(self._labels)
        result = {}
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            num_experts = layer.num_experts
            fraction = sum(w * shares[i][0] for w, shares in zip(weights, self._shares))
            dropped = sum(w * shares[i][1] for w, shares in zip(weights, self._shares))
            probs = np.concatenate([t["router_probs"] for t in self._tokens[i]])
            token_labels = np.repeat(labels, len(probs) // len(labels))
            if "expert_index" in self._tokens[i][0]:
                index = np.concatenate([t["expert_index"] for t in self._tokens[i]])
                per_token = np.zeros((index.shape[0], num_experts))
                for k in range(index.shape[1]):
                    np.add.at(per_token, (np.arange(index.shape[0]), index[:, k]), 1.0)
                kind = "assignments"
            else:
                per_token, kind = probs, "router_probs"
            result[name] = {
                "by_class": _class_shares(per_token, token_labels, self.num_classes),
                "expert_fraction": np.asarray(fraction, dtype=np.float64),
                "load_imbalance": float(num_experts * np.max(fraction)),
                "dropped_fraction": float(dropped),
                "kind": kind,
            }
        return result


def _record_routing(layers, valid=None):
    """Temporarily make `layers` record the routing dict of each call
    (`SparseMoE.call(..., return_routing=True)`) as tensors; with `valid`, a
    bool (batch,) tensor, the tokens of the rows where it is false are
    masked (`token_mask`)."""
    from keras import ops

    def wrap(original, seen):
        def call(inputs, *args, **kwargs):
            wanted = kwargs.pop("return_routing", False)
            if valid is not None:
                rows = ops.reshape(valid, (-1,) + (1,) * (len(inputs.shape) - 2))
                mask = ops.broadcast_to(rows, ops.shape(inputs)[:-1])
                given = kwargs.get("token_mask")
                kwargs["token_mask"] = mask if given is None else ops.logical_and(given, mask)
            outputs, routing = original(inputs, *args, return_routing=True, **kwargs)
            seen.append(routing)
            return (outputs, routing) if wanted else outputs

        return call

    return _wrapped_calls(layers, wrap)
