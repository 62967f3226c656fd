"""Read flax / vmoe checkpoints (msgpack) into flat NumPy dicts, without
flax, jax or vmoe.

Two formats (both msgpack; arrays are ExtType 1 holding msgpack
`(shape, dtype_name, raw C-order bytes)`):

- a flax `to_bytes` file: a nested map mirroring the params tree;
- vmoe's sharded checkpoint (`vmoe.checkpoints.partitioned`): `PREFIX.index`
  (the tree, each leaf giving the array's global shape and which data shard
  holds each slice) and `PREFIX.data-0000i-of-0000n` (the slices, each a list
  of 1-D chunks to concatenate), leaves numbered in the order of the
  flattened tree with keys sorted.
"""

import os
import re

import numpy as np

_ARRAY, _SCALAR, _SHAPED_ARRAY, _SLICE, _SLICE_ND, _INDEX_INFO = 1, 3, 4, 5, 6, 8
_CHUNK_MARKER = "__msgpack_array_chunk_a87ca2__"
_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<index>\d{5})-of-(?P<count>\d{5})$")


class _IndexInfo:
    """An index leaf: the array's global shape and dtype, and the data shards
    holding its slices."""

    def __init__(self, shape, dtype, shards):
        self.shape, self.dtype, self.shards = shape, dtype, shards


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (the message names the problem)."""


def _msgpack():
    try:
        import msgpack
    except ImportError as error:  # pragma: no cover - msgpack is a dependency
        raise CheckpointError(
            "Reading flax/vmoe checkpoints needs the `msgpack` package: pip install msgpack"
        ) from error
    return msgpack


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _unpack(data, path):
    msgpack = _msgpack()

    def ext_hook(code, payload):
        if code == _ARRAY:
            shape, dtype, buffer = msgpack.unpackb(payload, raw=True)
            dtype = np.dtype(_text(dtype))
            array = np.frombuffer(buffer, dtype=dtype)
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise CheckpointError(
                    f"{path}: an array of shape {tuple(shape)} holds {array.size} values."
                )
            return array.reshape(shape)
        if code == _SCALAR:
            dtype, buffer = msgpack.unpackb(payload, raw=True)
            return np.frombuffer(buffer, dtype=np.dtype(_text(dtype)))[0]
        if code == _SHAPED_ARRAY:
            shape, dtype = msgpack.unpackb(payload, raw=True)[:2]
            return ("shaped_array", tuple(shape), _text(dtype))
        if code == _SLICE:
            return tuple(msgpack.unpackb(payload, raw=True))
        if code == _SLICE_ND:
            return tuple(
                tuple(msgpack.unpackb(item, raw=True)) if isinstance(item, bytes) else item
                for item in msgpack.unpackb(payload, raw=True, ext_hook=ext_hook)
            )
        if code == _INDEX_INFO:
            shape, slices, shards = msgpack.unpackb(payload, raw=True, ext_hook=ext_hook)
            shape = msgpack.unpackb(shape, raw=True) if isinstance(shape, bytes) else shape
            slices = [
                ext_hook(_SLICE_ND, item) if isinstance(item, bytes) else item for item in slices
            ]
            return _IndexInfo(tuple(shape[0]), _text(shape[1]), list(shards))
        raise CheckpointError(f"{path}: unknown msgpack extension type {code}.")

    try:
        return msgpack.unpackb(data, raw=True, ext_hook=ext_hook, strict_map_key=False)
    except CheckpointError:
        raise
    except Exception as error:  # msgpack raises several types on corrupt data
        raise CheckpointError(
            f"{path} is not a readable msgpack checkpoint (truncated or corrupt): "
            f"{type(error).__name__}: {error}"
        ) from None


def _flatten(tree, prefix=""):
    """Nested dict -> {"a/b/c": leaf}, keys sorted (jax's tree_flatten order)."""
    flat = {}
    for key in sorted(tree, key=_text):
        value = tree[key]
        path = f"{prefix}{_text(key)}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def read_flax_msgpack(path):
    """The params of a flax `to_bytes` msgpack file as `{"a/b": ndarray}`."""
    with open(path, "rb") as f:
        tree = _unpack(f.read(), path)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} does not hold a params tree (a msgpack map).")
    flat = _flatten(tree)
    for name, value in flat.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path}: leaf {name!r} is not an array (received {type(value).__name__})."
            )
    return flat


def read_vmoe_sharded(prefix):
    """The params of vmoe's sharded checkpoint `prefix` (`prefix.index` plus
    its data shards) as `{"a/b": ndarray}`."""
    index_path = prefix + ".index"
    with open(index_path, "rb") as f:
        index = _unpack(f.read(), index_path)
    if not isinstance(index, dict) or b"index" not in index or b"shard_count" not in index:
        raise CheckpointError(f"{index_path} is not a vmoe checkpoint index.")
    count = int(index[b"shard_count"])
    leaves = _flatten(index[b"index"])
    params, filled = {}, {}
    for name, info in leaves.items():
        if not isinstance(info, _IndexInfo):
            raise CheckpointError(f"{index_path}: leaf {name!r} is not an index entry.")
        for number in info.shards:
            if not 0 <= number < count:
                raise CheckpointError(
                    f"{index_path}: {name!r} refers to data shard {number} of {count}."
                )
        params[name] = np.zeros(info.shape, dtype=np.dtype(info.dtype))
        filled[name] = 0
    names = list(leaves)
    # One shard in memory at a time: the arrays plus one shard's bytes at
    # the peak (vmoe writes disjoint slices, so counting values filled finds
    # a missing or truncated chunk).
    for number in range(count):
        shard_path = f"{prefix}.data-{number:05d}-of-{count:05d}"
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"Missing data shard {shard_path} of checkpoint {prefix}.")
        with open(shard_path, "rb") as f:
            data = _unpack(f.read(), shard_path)
        if not isinstance(data, dict) or not data.get(_CHUNK_MARKER.encode()):
            raise CheckpointError(f"{shard_path} is not a vmoe checkpoint data shard.")
        for key, chunks in data.items():
            key = _text(key)
            if key == _CHUNK_MARKER:
                continue
            if not key.isdigit() or int(key) >= len(names):
                raise CheckpointError(f"{shard_path} holds data of an unknown leaf {key!r}.")
            name = names[int(key)]
            array = params[name]
            for subchunks, global_slice in chunks:
                where = tuple(slice(start, stop, step) for start, stop, step in global_slice)
                values = np.concatenate([np.ravel(chunk) for chunk in subchunks])
                target = array[where]
                if values.size != target.size:
                    raise CheckpointError(
                        f"{prefix}: a chunk of {name!r} has {values.size} values for a slice "
                        f"of shape {target.shape} (truncated shard?)."
                    )
                array[where] = values.reshape(target.shape)
                filled[name] += target.size
        del data
    for name, array in params.items():
        if filled[name] != array.size:
            raise CheckpointError(
                f"{prefix}: {name!r} is only partly stored in the data shards "
                f"({filled[name]} of {array.size} values; missing or truncated shard?)."
            )
    return params


def read_checkpoint(path):
    """Params of a flax msgpack file, or of vmoe's sharded checkpoint given as
    its prefix, its `.index` file, one of its data shards or a directory
    holding exactly one such checkpoint.

    Returns:
        `(params, description)`: `{"a/b": ndarray}` and the resolved path.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        indexes = sorted(name for name in os.listdir(path) if name.endswith(".index"))
        msgpacks = sorted(name for name in os.listdir(path) if name.endswith(".msgpack"))
        if len(indexes) == 1:
            path = os.path.join(path, indexes[0])
        elif not indexes and len(msgpacks) == 1:
            path = os.path.join(path, msgpacks[0])
        else:
            raise CheckpointError(
                f"{path} is not a checkpoint directory: expected one vmoe '*.index' (with its "
                f"data shards) or one flax '*.msgpack' file; found {indexes + msgpacks or 'none'}."
            )
    match = _DATA_SHARD.match(path)
    if match:
        path = match.group("prefix")
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if os.path.isfile(path + ".index"):
        return read_vmoe_sharded(path), path
    if os.path.isfile(path):
        return read_flax_msgpack(path), path
    raise CheckpointError(
        f"No checkpoint at {path}: expected a flax msgpack file or a vmoe checkpoint "
        "(PREFIX.index and PREFIX.data-*-of-*)."
    )
