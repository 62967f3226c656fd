"""Read flax / vmoe checkpoints (msgpack) without flax, jax or vmoe.

Two formats (both msgpack; arrays are ExtType 1 holding msgpack
`(shape, dtype_name, raw C-order bytes)`):

- a flax `to_bytes` file: a nested map mirroring the params tree;
- vmoe's sharded checkpoint (`vmoe.checkpoints.partitioned`): `PREFIX.index`
  (the tree, each leaf giving the array's global shape and which data shard
  holds each slice) and `PREFIX.data-0000i-of-0000n` (the slices, each a list
  of 1-D chunks to concatenate), leaves numbered in the order of the
  flattened tree with keys sorted.

`open_checkpoint` reads the parameters' names, shapes and dtypes without
their values (vmoe's index, or a pass over the flax file that keeps no
array); `Checkpoint.read` then streams the values from the file, handing
each array over as soon as it is complete, so a caller that places each
array and lets it go holds about one array at a time (plus the arrays
spread over several data shards until their last slice is read).
`read_checkpoint` collects them all.
"""

import contextlib
import functools
import itertools
import os
import re
import struct

import numpy as np

_ARRAY, _SCALAR, _SHAPED_ARRAY, _SLICE, _SLICE_ND, _INDEX_INFO = 1, 3, 4, 5, 6, 8
_CHUNK_MARKER = "__msgpack_array_chunk_a87ca2__"
_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<index>\d{5})-of-(?P<count>\d{5})$")
_HEAD_SIZE = 4096  # bytes enough for an array extension's shape and dtype


class _IndexInfo:
    """An index leaf: the array's global shape and dtype, and the data shards
    holding its slices."""

    def __init__(self, shape, dtype, shards):
        self.shape, self.dtype, self.shards = shape, dtype, shards


class _Leaf:
    """Stands for the `number`-th array of a flax file while its shapes are
    read (unhashable, like the array it stands for)."""

    __hash__ = None

    def __init__(self, number):
        self.number = number


class _ConsumerError(Exception):
    """Carries an error of a `Checkpoint.read` consumer through msgpack."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (the message names the problem)."""


class Checkpoint:
    """A checkpoint opened by `open_checkpoint`: its parameters' names,
    shapes and dtypes, known without reading their values, and `read`, which
    streams the values.

    Attributes:
        path: the resolved path (a vmoe checkpoint's prefix, or the flax
            msgpack file).
        shapes: `{"a/b": shape tuple}`, in the flattened tree's order.
        dtypes: `{"a/b": numpy dtype}`.
    """

    def __init__(self, path, leaves, reader):
        self.path = path
        self.shapes = {name: tuple(shape) for name, (shape, _) in leaves.items()}
        self.dtypes = {name: dtype for name, (_, dtype) in leaves.items()}
        self._reader = reader

    def read(self, consume):
        """Call `consume(name, array)` once per parameter, as soon as its
        array is read complete (in the order of the file). Raises
        `CheckpointError` for a missing, truncated or corrupt file, possibly
        after some calls (so fill something that is dropped on error)."""
        self._reader(consume)


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


def _array(payload, path):
    """The ndarray of a msgpack extension 1 payload, msgpack
    `(shape, dtype_name, raw bytes)`: a view of `payload` (no copy)."""
    msgpack = _msgpack()
    head = msgpack.Unpacker(raw=True)
    head.feed(bytes(memoryview(payload)[:_HEAD_SIZE]))
    if head.read_array_header() != 3:
        raise ValueError("an array extension is not (shape, dtype, data)")
    shape, dtype = tuple(head.unpack()), np.dtype(_text(head.unpack()))
    offset = head.tell()  # the data's bin header: 0xc4/0xc5/0xc6, then its length
    width = {0xc4: 1, 0xc5: 2, 0xc6: 4}.get(payload[offset]) if offset < len(payload) else None
    if width is None:
        raise ValueError("the data of an array extension is not a msgpack bin")
    start = offset + 1 + width
    size = int.from_bytes(payload[offset + 1:start], "big")
    if start + size != len(payload) or size % dtype.itemsize:
        raise ValueError("an array extension's data has the wrong length")
    array = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=start)
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise CheckpointError(
            f"{path}: an array of shape {shape} holds {array.size} values."
        )
    return array.reshape(shape)


class _Stream:
    """A streaming msgpack decoder over a binary file, for checkpoints.

    Decodes as `msgpack.unpackb(raw=True)` does, one object at a time, but
    reads the payload of each extension (an array) from the file straight
    into a buffer of its own that the array then views: one copy of each
    array in memory, none of the file. (msgpack's own `Unpacker` copies each
    payload out of a read buffer that grows to twice the largest array.)
    """

    _WIDTH = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4,  # bin, str
              0xc7: 1, 0xc8: 2, 0xc9: 4, 0xdc: 2, 0xdd: 4, 0xde: 2, 0xdf: 4}  # ext, array, map
    _FIXEXT = {0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}
    _NUMBER = {0xca: ">f", 0xcb: ">d", 0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
               0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
    _CONSTANT = {0xc0: None, 0xc2: False, 0xc3: True}

    def __init__(self, file, ext_hook):
        self.file, self.ext_hook = file, ext_hook

    def _take(self, size):
        data = self.file.read(size)
        if len(data) != size:
            raise EOFError(f"the file ends {size - len(data)} bytes early")
        return data

    def _length(self, code):
        return int.from_bytes(self._take(self._WIDTH[code]), "big")

    def map_header(self):
        """The number of entries of the map that comes next, or None when
        the next object is not a map (then the stream is spent)."""
        code = self._take(1)[0]
        if 0x80 <= code <= 0x8f:
            return code & 0x0f
        return self._length(code) if code in (0xde, 0xdf) else None

    def read(self):
        """The next object."""
        code = self._take(1)[0]
        if code <= 0x7f or code >= 0xe0:
            return code if code <= 0x7f else code - 0x100
        if code <= 0x8f or code in (0xde, 0xdf):
            size = code & 0x0f if code <= 0x8f else self._length(code)
            return {self.read(): self.read() for _ in range(size)}
        if code <= 0x9f or code in (0xdc, 0xdd):
            size = code & 0x0f if code <= 0x9f else self._length(code)
            return [self.read() for _ in range(size)]
        if code <= 0xbf:
            return self._take(code & 0x1f)
        if code in self._CONSTANT:
            return self._CONSTANT[code]
        if code in self._NUMBER:
            fmt = self._NUMBER[code]
            return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
        if code in (0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb):
            return self._take(self._length(code))
        if code in self._FIXEXT or code in (0xc7, 0xc8, 0xc9):
            size = self._FIXEXT[code] if code in self._FIXEXT else self._length(code)
            kind = int.from_bytes(self._take(1), "big", signed=True)
            payload = bytearray(size)
            if self.file.readinto(payload) != size:
                raise EOFError("the file ends inside an extension")
            return self.ext_hook(kind, payload)
        raise ValueError(f"byte 0x{code:02x} does not start a msgpack object")


def _ext_hook(path, array=None):
    """msgpack's `ext_hook` for flax/vmoe extension types; `array(payload)`
    decodes the arrays (default: `_array`)."""
    msgpack = _msgpack()
    array = array or functools.partial(_array, path=path)

    def ext_hook(code, payload):
        if code == _ARRAY:
            return array(payload)
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

    return ext_hook


@contextlib.contextmanager
def _readable(path):
    """Turn msgpack's errors on corrupt data into a one-line
    `CheckpointError` (a consumer's own errors pass unchanged)."""
    try:
        yield
    except CheckpointError:
        raise
    except _ConsumerError as wrapped:
        raise wrapped.error from None
    except Exception as error:  # msgpack raises several types on corrupt data
        raise CheckpointError(
            f"{path} is not a readable msgpack checkpoint (truncated or corrupt): "
            f"{type(error).__name__}: {error}"
        ) from None


def _unpack(data, path):
    with _readable(path):
        return _msgpack().unpackb(data, raw=True, ext_hook=_ext_hook(path),
                                  strict_map_key=False)


def _unpack_one(file, path, ext_hook):
    """The single msgpack object of `file`, streamed."""
    with _readable(path):
        tree = _Stream(file, ext_hook).read()
        if file.read(1):
            raise ValueError("data after the checkpoint's object")
        return tree


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


def _open_flax_msgpack(path):
    """A flax `to_bytes` msgpack file: a first pass reads the tree with
    stand-ins for its arrays (one array in memory at a time)."""
    leaves = []

    def shape_only(payload):
        array = _array(payload, path)
        leaves.append((array.shape, array.dtype))
        return _Leaf(len(leaves) - 1)

    with open(path, "rb") as f:
        tree = _unpack_one(f, path, _ext_hook(path, shape_only))
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} does not hold a params tree (a msgpack map).")
    flat = _flatten(tree)
    for name, value in flat.items():
        if not isinstance(value, _Leaf):
            raise CheckpointError(
                f"{path}: leaf {name!r} is not an array (received {type(value).__name__})."
            )
    names = [None] * len(leaves)
    for name, leaf in flat.items():
        names[leaf.number] = name
    return Checkpoint(path, {name: leaves[leaf.number] for name, leaf in flat.items()},
                      functools.partial(_read_flax_msgpack, path, names))


def _read_flax_msgpack(path, names, consume):
    """The second pass: each array goes to `consume` as it is decoded."""
    numbers = itertools.count()

    def hand_over(payload):
        array = _array(payload, path)
        name = names[next(numbers)]
        try:
            consume(name, array)
        except Exception as error:
            raise _ConsumerError(error) from None

    with open(path, "rb") as f:
        _unpack_one(f, path, _ext_hook(path, hand_over))


def read_flax_msgpack(path):
    """The params of a flax `to_bytes` msgpack file as `{"a/b": ndarray}`."""
    return _collect(_open_flax_msgpack(path))


def _open_vmoe_sharded(prefix):
    """vmoe's sharded checkpoint: the shapes come from `prefix.index`, the
    values, when read, from the data shards one map entry at a time."""
    index_path = prefix + ".index"
    with open(index_path, "rb") as f:
        index = _unpack(f.read(), index_path)
    if not isinstance(index, dict) or b"index" not in index or b"shard_count" not in index:
        raise CheckpointError(f"{index_path} is not a vmoe checkpoint index.")
    count = int(index[b"shard_count"])
    leaves = {}
    for name, info in _flatten(index[b"index"]).items():
        if not isinstance(info, _IndexInfo):
            raise CheckpointError(f"{index_path}: leaf {name!r} is not an index entry.")
        for number in info.shards:
            if not 0 <= number < count:
                raise CheckpointError(
                    f"{index_path}: {name!r} refers to data shard {number} of {count}."
                )
        try:
            dtype = np.dtype(info.dtype)
        except TypeError:
            raise CheckpointError(
                f"{index_path}: {name!r} has dtype {info.dtype!r}, which NumPy cannot read."
            ) from None
        leaves[name] = (info.shape, dtype)
    shards = [f"{prefix}.data-{number:05d}-of-{count:05d}" for number in range(count)]
    for shard_path in shards:
        _check_shard_exists(shard_path, prefix)
    return Checkpoint(prefix, leaves, functools.partial(_read_vmoe_shards, prefix, shards, leaves))


def _check_shard_exists(shard_path, prefix):
    if not os.path.isfile(shard_path):
        raise CheckpointError(f"Missing data shard {shard_path} of checkpoint {prefix}.")


def _shard_entries(file, path):
    """`(leaf number, chunks)` of a vmoe data shard, one map entry at a time."""
    stream = _Stream(file, _ext_hook(path))
    with _readable(path):
        entries = stream.map_header() or 0
        marked = entries > 0 and stream.read() == _CHUNK_MARKER.encode() and stream.read() is True
    if not marked:
        raise CheckpointError(f"{path} is not a vmoe checkpoint data shard.")
    for _ in range(entries - 1):
        with _readable(path):
            key, chunks = _text(stream.read()), stream.read()
        if not isinstance(key, str) or not key.isdigit():
            raise CheckpointError(f"{path} holds data of an unknown leaf {key!r}.")
        yield int(key), chunks


def _read_vmoe_shards(prefix, shards, leaves, consume):
    """Fill each leaf from its chunks, shard after shard, and hand it to
    `consume` once complete (vmoe writes disjoint slices, so counting the
    values filled finds a missing or truncated chunk)."""
    names = list(leaves)
    remaining = {name: int(np.prod(shape, dtype=np.int64)) for name, (shape, _) in leaves.items()}
    partial = {}  # leaves spread over several chunks, until complete
    for name, size in remaining.items():
        if size == 0:  # an empty array has no chunk
            consume(name, np.zeros(*leaves[name]))
    for shard_path in shards:
        _check_shard_exists(shard_path, prefix)
        with open(shard_path, "rb") as f:
            for number, chunks in _shard_entries(f, shard_path):
                if number >= len(names):
                    raise CheckpointError(
                        f"{shard_path} holds data of an unknown leaf {str(number)!r}.")
                name = names[number]
                shape, dtype = leaves[name]
                try:
                    chunks = [(subchunks, tuple(slice(*bounds) for bounds in where))
                              for subchunks, where in chunks]
                except (TypeError, ValueError):
                    raise CheckpointError(
                        f"{shard_path}: the data of {name!r} is not a list of chunks."
                    ) from None
                for subchunks, where in chunks:
                    # a zero-strided stand-in gives the slice's shape for free
                    part = np.broadcast_to(np.empty((), dtype), shape)[where].shape
                    values = (np.ravel(subchunks[0]) if len(subchunks) == 1
                              else np.concatenate([np.ravel(chunk) for chunk in subchunks]))
                    size = int(np.prod(part, dtype=np.int64))
                    if values.size != size:
                        raise CheckpointError(
                            f"{prefix}: a chunk of {name!r} has {values.size} values for a "
                            f"slice of shape {part} (truncated shard?)."
                        )
                    if size > remaining[name]:
                        raise CheckpointError(
                            f"{prefix}: the data shards store {name!r} more than once."
                        )
                    remaining[name] -= size
                    if name not in partial and remaining[name] == 0:  # one chunk: no copy
                        consume(name, values.reshape(shape).astype(dtype, copy=False))
                        continue
                    if name not in partial:
                        partial[name] = np.zeros(shape, dtype)
                    partial[name][where] = values.reshape(part)
                    if remaining[name] == 0:
                        consume(name, partial.pop(name))
                del chunks
    for name, left in remaining.items():
        if left:
            size = int(np.prod(leaves[name][0], dtype=np.int64))
            raise CheckpointError(
                f"{prefix}: {name!r} is only partly stored in the data shards "
                f"({size - left} of {size} values; missing or truncated shard?)."
            )


def read_vmoe_sharded(prefix):
    """The params of vmoe's sharded checkpoint `prefix` (`prefix.index` plus
    its data shards) as `{"a/b": ndarray}`."""
    return _collect(_open_vmoe_sharded(prefix))


def _collect(checkpoint):
    params = {}
    checkpoint.read(params.__setitem__)
    return {name: params[name] for name in checkpoint.shapes}


def open_checkpoint(path):
    """Open a flax msgpack file, or vmoe's sharded checkpoint given as its
    prefix, its `.index` file, one of its data shards or a directory holding
    exactly one such checkpoint, reading the parameters' names and shapes
    but not their values (every data shard of a vmoe checkpoint must exist).

    Returns:
        A `Checkpoint`: `path`, `shapes`, `dtypes`, and `read(consume)`,
        which hands each array to `consume(name, array)` once it is read.
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
        return _open_vmoe_sharded(path)
    if os.path.isfile(path):
        return _open_flax_msgpack(path)
    raise CheckpointError(
        f"No checkpoint at {path}: expected a flax msgpack file or a vmoe checkpoint "
        "(PREFIX.index and PREFIX.data-*-of-*)."
    )


def read_checkpoint(path):
    """Params of a flax msgpack file, or of vmoe's sharded checkpoint given as
    its prefix, its `.index` file, one of its data shards or a directory
    holding exactly one such checkpoint (all in memory; `open_checkpoint`
    streams them).

    Returns:
        `(params, description)`: `{"a/b": ndarray}` and the resolved path.
    """
    checkpoint = open_checkpoint(path)
    return _collect(checkpoint), checkpoint.path
