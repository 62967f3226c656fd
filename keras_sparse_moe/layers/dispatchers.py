"""Dispatchers: the one place where tokens move to the experts and back.

A router's `dispatcher(routing, ...)` returns one of these objects, built from
its routing dictionary; `SparseMoE` then runs

    expert_inputs = dispatcher.dispatch(tokens)          # tokens (G, S, D)
    expert_outputs = experts(expert_inputs, **dispatcher.expert_kwargs)
    outputs = dispatcher.combine(expert_outputs)         # (G, S, D)

without knowing which router it has. Expert-major dispatchers
(`expert_major = True`) lay the expert tensors out `(E, G * C, D)` (so the
experts run as one batched matmul and the `E` axis can be sharded);
`RaggedDispatcher` gives expert-sorted rows `(M, D)` instead.

- `GatherDispatcher` (token choice, expert choice): each slot gathers its
  token; the combine is a per-assignment gather (token choice) or dense
  combine weights (expert choice, where a token may sit in any number of
  slots).
- `DenseDispatcher` (Soft MoE, or any router giving `(G, S, E, C)`
  dispatch/combine weights): einsums.
- `RaggedDispatcher` (dropless token choice on JAX / PyTorch): assignments
  sorted by expert, no padding.
- `Bfloat16Dispatcher` wraps any of them and rounds the moved data to
  bfloat16 (vmoe's dispatcher of the same name).
"""

from keras import ops

from keras_sparse_moe.distribution.constraints import expert_parallel_active
from keras_sparse_moe.layers.dispatch import dense_combine
from keras_sparse_moe.layers.dispatch import dense_dispatch
from keras_sparse_moe.layers.dispatch import gather_combine
from keras_sparse_moe.layers.dispatch import gather_dispatch
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_dense_dispatch
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_combine
from keras_sparse_moe.layers.grouped_dispatch import grouped_gather_dispatch
from keras_sparse_moe.layers.ragged_experts import ragged_combine
from keras_sparse_moe.layers.ragged_experts import ragged_dispatch
from keras_sparse_moe.layers.ragged_experts import sort_assignments


class Dispatcher:
    """Base class: `dispatch(tokens)` and `combine(expert_outputs)`.

    Attributes:
        expert_major: bool, the expert tensors are `(E, G * C, D)`.
        expert_kwargs: dict of extra keyword arguments for `Experts`.
    """

    expert_major = True

    @property
    def expert_kwargs(self):
        return {}

    def dispatch(self, tokens):
        """Expert inputs from grouped tokens `(G, S, D)`."""
        raise NotImplementedError

    def combine(self, expert_outputs):
        """Token outputs `(G, S, D)` from the experts' outputs."""
        raise NotImplementedError


class GatherDispatcher(Dispatcher):
    """Slots filled by gathering their token.

    Args:
        slot_token: int (G, E, C), the token of every slot (`S`: empty).
        expert_index, expert_position, gates: (G, S, K) per-assignment
            view (token choice): expert, slot within the expert, gate (0 if
            dropped). The combine then gathers each token's `K` outputs.
        combine_weights: (G, S, E, C), instead of the per-assignment view
            (expert choice): the combine is an einsum with these weights.

    Example:
    >>> import numpy as np
    >>> slot_token = np.array([[[1], [0]]], "int32")  # G=1, E=2, C=1
    >>> d = GatherDispatcher(slot_token, expert_index=np.array([[[1], [0]]], "int32"),
    ...                      expert_position=np.zeros((1, 2, 1), "int32"),
    ...                      gates=np.ones((1, 2, 1), "float32"))
    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2)
    >>> np.asarray(d.dispatch(x))[:, 0].tolist()
    [[2.0, 3.0], [0.0, 1.0]]
    >>> np.asarray(d.combine(d.dispatch(x))).tolist()
    [[[0.0, 1.0], [2.0, 3.0]]]
    """

    def __init__(self, slot_token, expert_index=None, expert_position=None, gates=None,
                 combine_weights=None):
        per_assignment = expert_index is not None
        if per_assignment == (combine_weights is not None):
            raise ValueError(
                "GatherDispatcher needs either `expert_index`/`expert_position`/`gates` "
                "or `combine_weights`, not both nor neither."
            )
        self.slot_token = ops.convert_to_tensor(slot_token)
        self.capacity = int(slot_token.shape[-1])
        self.expert_index, self.expert_position, self.gates, self.combine_weights = (
            None if t is None else ops.convert_to_tensor(t)
            for t in (expert_index, expert_position, gates, combine_weights)
        )

    def dispatch(self, tokens):
        tokens = ops.convert_to_tensor(tokens)
        if expert_parallel_active():  # gathers within each group: all-to-all
            return grouped_gather_dispatch(tokens, self.slot_token)
        return gather_dispatch(tokens, self.slot_token)

    def combine(self, expert_outputs):
        expert_outputs = ops.convert_to_tensor(expert_outputs)
        grouped = expert_parallel_active()
        if self.combine_weights is not None:
            combine = grouped_dense_combine if grouped else dense_combine
            return combine(expert_outputs, self.combine_weights)
        combine = grouped_gather_combine if grouped else gather_combine
        return combine(
            expert_outputs, self.expert_index, self.expert_position, self.gates, self.capacity
        )


class DenseDispatcher(Dispatcher):
    """Slots as weighted sums of tokens, outputs as weighted sums of slots.

    Args:
        dispatch_weights, combine_weights: (G, S, E, C).

    Example:
    >>> import numpy as np
    >>> w = np.full((1, 2, 1, 1), 0.5, "float32")  # one slot mixing two tokens
    >>> d = DenseDispatcher(w, w)
    >>> np.asarray(d.dispatch(np.array([[[2.0], [4.0]]], "float32"))).tolist()
    [[[3.0]]]
    """

    def __init__(self, dispatch_weights, combine_weights):
        self.dispatch_weights = ops.convert_to_tensor(dispatch_weights)
        self.combine_weights = ops.convert_to_tensor(combine_weights)

    def dispatch(self, tokens):
        dispatch = grouped_dense_dispatch if expert_parallel_active() else dense_dispatch
        return dispatch(ops.convert_to_tensor(tokens), self.dispatch_weights)

    def combine(self, expert_outputs):
        combine = grouped_dense_combine if expert_parallel_active() else dense_combine
        return combine(ops.convert_to_tensor(expert_outputs), self.combine_weights)


class Bfloat16Dispatcher(Dispatcher):
    """Another dispatcher with its data rounded to bfloat16.

    The tokens are rounded to bfloat16 before `dispatch` and the expert
    outputs before `combine` (round to nearest, ties to even); the routing
    weights and the weighted sums stay float32 and so do the returned
    tensors. This is vmoe's `Bfloat16Dispatcher`, which its Soft MoE router
    always uses and its token / expert choice dispatchers use with
    `bfloat16: True` (it halves the bytes moved between devices).

    Args:
        dispatcher: the `Dispatcher` to wrap.

    Example:
    >>> import numpy as np
    >>> w = np.ones((1, 1, 1, 1), "float32")
    >>> d = Bfloat16Dispatcher(DenseDispatcher(w, w))
    >>> float(np.asarray(d.dispatch(np.array([[[1.0 + 2.0 ** -10]]], "float32")))[0, 0, 0])
    1.0
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.expert_major = dispatcher.expert_major

    @property
    def expert_kwargs(self):
        return self.dispatcher.expert_kwargs

    @staticmethod
    def _round(x):
        x = ops.convert_to_tensor(x)
        return ops.cast(ops.cast(x, "bfloat16"), x.dtype)

    def dispatch(self, tokens):
        return self.dispatcher.dispatch(self._round(tokens))

    def combine(self, expert_outputs):
        return self.dispatcher.combine(self._round(expert_outputs))


class RaggedDispatcher(Dispatcher):
    """Every assignment as one row, rows sorted by expert (dropless).

    `dispatch` gives `(M, D)` rows (`M = G * S * K`) with
    `expert_kwargs = {"group_sizes": ...}` for `Experts`; `combine` sums each
    token's `K` rows weighted by its gates.

    Args:
        expert_index: int (G, S, K), the experts of every token.
        gates: (G, S, K), their gates.
        num_experts: int.
        token_mask: optional bool (G, S); masked tokens get no row.

    Example:
    >>> import numpy as np
    >>> d = RaggedDispatcher(np.array([[[1], [0]]], "int32"),
    ...                      np.ones((1, 2, 1), "float32"), num_experts=2)
    >>> x = np.array([[[1.0], [2.0]]], "float32")
    >>> np.asarray(d.dispatch(x)).tolist()  # expert 0's row first
    [[2.0], [1.0]]
    >>> np.asarray(d.combine(d.dispatch(x))).tolist()
    [[[1.0], [2.0]]]
    """

    expert_major = False

    def __init__(self, expert_index, gates, num_experts, token_mask=None):
        num_groups, group_size, top_k = expert_index.shape
        self.group_size = int(group_size)
        self.top_k = int(top_k)
        self.gates = ops.reshape(ops.convert_to_tensor(gates), (-1, self.top_k))
        self.sorting = sort_assignments(
            ops.reshape(ops.convert_to_tensor(expert_index), (-1, self.top_k)),
            num_experts,
            None if token_mask is None else ops.reshape(token_mask, (-1,)),
        )

    @property
    def expert_kwargs(self):
        return {"group_sizes": self.sorting["group_sizes"]}

    def dispatch(self, tokens):
        tokens = ops.convert_to_tensor(tokens)
        return ragged_dispatch(ops.reshape(tokens, (-1, tokens.shape[-1])), self.sorting)

    def combine(self, expert_outputs):
        expert_outputs = ops.convert_to_tensor(expert_outputs)
        combined = ragged_combine(expert_outputs, self.sorting, self.gates)
        return ops.reshape(combined, (-1, self.group_size, expert_outputs.shape[-1]))
