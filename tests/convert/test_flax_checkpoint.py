"""The streaming checkpoint reader (`open_checkpoint`): shapes before values,
leaves assembled from slices spread over chunks and data shards, and
one-line errors for slices stored twice or missing (the vmoe_token fixture's
shards, rewritten the way vmoe splits a big array)."""

import json
import os
import shutil

import msgpack
import numpy as np
import pytest

from keras_sparse_moe.convert import CheckpointError
from keras_sparse_moe.convert import convert_vmoe
from keras_sparse_moe.convert import open_checkpoint
from keras_sparse_moe.convert import read_checkpoint

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vmoe", "models",
                       "vmoe_token")
SHARDS = ["params.data-00000-of-00002", "params.data-00001-of-00002"]
LEAF = "Encoder/encoderblock_0/Moe/Mlp/Dense_0/kernel"  # (4, 8, 16), in shard 0


def array_ext(values):
    """vmoe's array chunk: ExtType 1 of msgpack (shape, dtype, bytes), 1-D."""
    values = np.ascontiguousarray(values).ravel()
    return msgpack.ExtType(1, msgpack.packb(
        [list(values.shape), values.dtype.name, values.tobytes()], use_bin_type=True))


def slice_ext(bounds):
    """vmoe's SliceNd: ExtType 6 of a tuple of packed (start, stop, step)."""
    return msgpack.ExtType(6, msgpack.packb(
        [msgpack.packb([start, stop, None]) for start, stop in bounds], use_bin_type=True))


def rewrite(tmp_path, edit):
    """A copy of the fixture whose shards `edit(shards, number, array)`
    rewrites (`shards`: two {str key: chunks} dicts, marker first; `number`:
    LEAF's key; `array`: LEAF's values)."""
    target = tmp_path / "checkpoint"
    shutil.copytree(FIXTURE, target)
    os.remove(target / "params.msgpack")
    with open(os.path.join(FIXTURE, "tree.json")) as f:
        number = str(list(json.load(f)).index(LEAF))
    shards = []
    for name in SHARDS:
        with open(target / name, "rb") as f:
            data = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
        shards.append(data)
    assert number in shards[0]
    array = read_checkpoint(FIXTURE)[0][LEAF]
    edit(shards, number, array)
    for name, data in zip(SHARDS, shards):
        with open(target / name, "wb") as f:
            f.write(msgpack.packb(data, use_bin_type=True))
    return target


def split(shards, number, array):
    """LEAF's first two experts in shard 0 as two subchunks, the other two
    in shard 1: as vmoe stores an array bigger than its chunk size."""
    first = array[:2].ravel()
    shards[0][number] = [[[array_ext(first[:50]), array_ext(first[50:])],
                          slice_ext([(0, 2), (0, 8), (0, 16)])]]
    shards[1][number] = [[[array_ext(array[2:])], slice_ext([(2, 4), (0, 8), (0, 16)])]]


@pytest.mark.single_backend
def test_shapes_come_before_the_values(tmp_path):
    source = rewrite(tmp_path, lambda *args: None)
    shard = source / SHARDS[1]
    shard.write_bytes(shard.read_bytes()[:100])  # truncated: shapes still readable
    checkpoint = open_checkpoint(source)
    with open(os.path.join(FIXTURE, "tree.json")) as f:
        tree = json.load(f)
    assert checkpoint.shapes == {name: tuple(shape) for name, (shape, _) in tree.items()}
    assert {str(dtype) for dtype in checkpoint.dtypes.values()} == {"float32"}
    seen = []
    with pytest.raises(CheckpointError, match="truncated") as info:
        checkpoint.read(lambda name, array: seen.append(name))
    assert "\n" not in str(info.value)
    assert 0 < len(seen) < len(tree)  # shard 0's arrays came out before the error


@pytest.mark.single_backend
def test_leaf_spread_over_chunks_and_shards(tmp_path):
    expected, _ = read_checkpoint(FIXTURE)
    source = rewrite(tmp_path, split)
    order = []
    params = {}

    def consume(name, array):
        order.append(name)
        params[name] = array

    open_checkpoint(source / "params.index").read(consume)
    assert sorted(order) == sorted(expected)  # each parameter handed over once
    for name, values in expected.items():
        np.testing.assert_array_equal(params[name], values)
    # LEAF is complete only with shard 1's slice: handed over after the
    # arrays stored in shard 0 alone.
    names = list(expected)
    keys = []
    for shard in SHARDS:
        with open(source / shard, "rb") as f:
            keys.append({names[int(key)] for key in msgpack.unpackb(
                f.read(), strict_map_key=False) if key.isdigit()})
    assert LEAF in keys[0] & keys[1]
    assert order.index(LEAF) > max(order.index(name) for name in keys[0] - keys[1])


@pytest.mark.single_backend
def test_slices_stored_twice_or_missing(tmp_path):
    def twice(shards, number, array):
        split(shards, number, array)
        shards[0][number] = shards[0][number] + shards[1][number]

    def missing(shards, number, array):
        split(shards, number, array)
        del shards[1][number]

    with pytest.raises(CheckpointError, match=f"store '{LEAF}' more than once"):
        read_checkpoint(rewrite(tmp_path / "twice", twice))
    with pytest.raises(CheckpointError, match=f"'{LEAF}' is only partly stored.*256 of 512"):
        read_checkpoint(rewrite(tmp_path / "missing", missing))


@pytest.mark.single_backend
def test_non_finite_value_writes_nothing(tmp_path):
    def nan(shards, number, array):
        array = array.copy()
        array[1, 2, 3] = np.nan
        shards[0][number] = [[[array_ext(array)], slice_ext([(0, 4), (0, 8), (0, 16)])]]

    with pytest.raises(CheckpointError, match=f"'{LEAF}' holds non-finite"):
        convert_vmoe(rewrite(tmp_path, nan), tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.single_backend
def test_streaming_decoder_reads_what_msgpack_reads():
    import io

    from keras_sparse_moe.convert.flax_checkpoint import _Stream

    objects = {
        "ints": [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1,
                 -1, -32, -33, -128, -129, -32768, -32769, -2**31 - 1, -2**63],
        "floats": [0.5, -1.25e30, float("inf")],
        "text": ["", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "e" * 65536],
        "bytes": [b"", b"x" * 255, b"y" * 256, b"z" * 65536],
        "constants": [None, True, False],
        "containers": [list(range(15)), list(range(16)), list(range(70000)),
                       {str(i): i for i in range(16)}, {}],
        "ext": [msgpack.ExtType(code, b"q" * size) for code, size in
                ((1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 3), (7, 300), (8, 70000),
                                  (9, 0))],
    }
    for single in (False, True):
        data = msgpack.packb(objects, use_bin_type=True, use_single_float=single)
        expected = msgpack.unpackb(data, raw=True, strict_map_key=False)
        assert _Stream(io.BytesIO(data), ext).read() == expected
    with pytest.raises(EOFError, match="inside an extension"):  # cut in the 70000 bytes
        _Stream(io.BytesIO(data[:-100]), ext).read()
    with pytest.raises(EOFError, match="ends 1 bytes early"):
        _Stream(io.BytesIO(data[:-1]), ext).read()
    with pytest.raises(ValueError, match="0xc1"):
        _Stream(io.BytesIO(b"\xc1"), ext).read()


def ext(code, payload):
    return msgpack.ExtType(code, bytes(payload))
