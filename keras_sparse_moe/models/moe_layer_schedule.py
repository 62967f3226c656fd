"""Which transformer blocks get a sparse MoE MLP, and with which arguments.

Pure functions shared by MoE backbones: the V-MoE placement grammar
(Riquelme et al. 2021, "Scaling Vision with Sparse Mixture of Experts",
https://arxiv.org/abs/2106.05974) and per-block `SparseMoE` arguments.
"""

import numbers
import re

from keras_sparse_moe.layers.sparse_moe import SparseMoE

_EVERY = re.compile(r"^every_(\d+)$")
_LAST = re.compile(r"^last_(\d+)$")
_RESERVED_MOE_KWARGS = ("intermediate_dim", "name", "dtype")


def resolve_moe_layers(moe_layers, num_layers):
    """Block indices (counting from 0) whose MLP is a sparse MoE.

    Grammar (V-MoE):

    - `"every_N"`: every N-th block, ending each period: blocks N-1, 2N-1, ...
      (`"every_2"` = 1, 3, 5, ...: every other block, as in V-MoE).
    - `"last_N"`: the last N of the `"every_2"` blocks (V-MoE "Last-N"); for
      12 blocks `"last_2"` is (9, 11).
    - `"all"`, `"none"`.
    - a list/tuple of block indices (negative indices count from the end).

    Args:
        moe_layers: str or sequence of ints, see above.
        num_layers: int >= 1, number of blocks.

    Returns:
        A sorted tuple of unique ints in `[0, num_layers)`.

    Example:
    >>> resolve_moe_layers("every_2", 12)
    (1, 3, 5, 7, 9, 11)
    >>> resolve_moe_layers("last_2", 12)
    (9, 11)
    >>> resolve_moe_layers([-1, 0], 4)
    (0, 3)
    """
    allowed = (
        "'every_N', 'last_N' (N >= 1), 'all', 'none' or a list of block indices in "
        f"[-{num_layers}, {num_layers})"
    )
    if isinstance(moe_layers, str):
        every, last = _EVERY.match(moe_layers), _LAST.match(moe_layers)
        if moe_layers == "all":
            return tuple(range(num_layers))
        if moe_layers == "none":
            return ()
        if every and int(every.group(1)) >= 1:
            period = int(every.group(1))
            indices = tuple(i for i in range(num_layers) if i % period == period - 1)
            if not indices:
                raise ValueError(
                    f"Argument `moe_layers`={moe_layers!r} selects no block of a "
                    f"{num_layers}-block model; use N <= {num_layers}, or 'none'."
                )
            return indices
        if last and int(last.group(1)) >= 1:
            odd = resolve_moe_layers("every_2", num_layers) if num_layers >= 2 else ()
            count = int(last.group(1))
            if count > len(odd):
                raise ValueError(
                    f"Argument `moe_layers`={moe_layers!r} asks for the last {count} odd "
                    f"blocks, but a {num_layers}-block model has only {len(odd)} "
                    f"({list(odd)}). Pass an explicit list of block indices instead."
                )
            return odd[-count:]
        raise ValueError(f"Argument `moe_layers` must be {allowed}; received {moe_layers!r}.")
    if isinstance(moe_layers, (list, tuple)):
        indices = []
        for value in moe_layers:
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or not -num_layers <= value < num_layers
            ):
                raise ValueError(
                    f"Argument `moe_layers` must be {allowed}; received {moe_layers!r} "
                    f"(bad entry {value!r})."
                )
            indices.append(int(value) % num_layers)
        if len(set(indices)) != len(indices):
            raise ValueError(
                f"Argument `moe_layers` lists a block twice; received {moe_layers!r}."
            )
        return tuple(sorted(indices))
    raise ValueError(f"Argument `moe_layers` must be {allowed}; received {moe_layers!r}.")


def _sparse_moe_arguments():
    return sorted(set(SparseMoE.argument_names()) - set(_RESERVED_MOE_KWARGS))


def split_moe_kwargs(moe_kwargs, moe_indices):
    """Split `moe_kwargs` into shared and per-block `SparseMoE` arguments.

    `moe_kwargs` is None or a dict whose string keys are `SparseMoE`
    arguments applied to every MoE block, and whose integer keys (or digit
    strings, as after a JSON round trip) are block indices mapping to dicts
    of arguments for that block only.

    Returns:
        `(shared, per_block)`: a dict, and a dict {block index: dict}.

    Example:
    >>> split_moe_kwargs({"group_size": 4, 3: {"num_experts": 16}}, (1, 3))
    ({'group_size': 4}, {3: {'num_experts': 16}})
    """
    if moe_kwargs is None:
        return {}, {}
    if not isinstance(moe_kwargs, dict):
        raise ValueError(
            "Argument `moe_kwargs` must be None or a dict of SparseMoE arguments "
            f"(optionally with block-index keys); received {moe_kwargs!r}."
        )
    allowed = _sparse_moe_arguments()
    shared, per_block = {}, {}

    def check_names(kwargs, where):
        for name in kwargs:
            if name not in allowed:
                raise ValueError(
                    f"Argument `moe_kwargs`{where} has unknown SparseMoE argument "
                    f"{name!r}; allowed: {allowed}. (`intermediate_dim` is `mlp_dim`.)"
                )

    for key, value in moe_kwargs.items():
        is_index = (isinstance(key, numbers.Integral) and not isinstance(key, bool)) or (
            isinstance(key, str) and key.lstrip("-").isdigit()
        )
        if not is_index:
            check_names({key: value}, "")
            shared[key] = value
            continue
        index = int(key)
        if index not in moe_indices:
            raise ValueError(
                f"Argument `moe_kwargs` has options for block {index}, which is not a MoE "
                f"block; MoE blocks are {list(moe_indices)}."
            )
        if not isinstance(value, dict):
            raise ValueError(
                f"Argument `moe_kwargs[{index}]` must be a dict of SparseMoE arguments; "
                f"received {value!r}."
            )
        check_names(value, f"[{index}]")
        per_block[index] = dict(value)
    return shared, per_block


def block_moe_arguments(index, base, shared, per_block):
    """`SparseMoE` arguments of block `index`: `base`, then `shared`, then
    that block's own options.

    Example:
    >>> block_moe_arguments(3, {"num_experts": 8}, {}, {3: {"num_experts": 4}})
    {'num_experts': 4}
    """
    return {**base, **shared, **per_block.get(index, {})}
