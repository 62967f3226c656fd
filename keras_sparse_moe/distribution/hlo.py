"""Bytes moved by collectives, read from compiled (partitioned) HLO text."""

import re

COLLECTIVES = ("all-to-all", "all-gather", "all-reduce", "reduce-scatter",
               "collective-permute")
_DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "c64": 8, "f32": 4, "s32": 4, "u32": 4,
                "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1,
                "f8e4m3fn": 1, "f8e5m2": 1}
_INSTRUCTION = re.compile(
    r"= (\(.*?\)|\w+\[[^\]]*\]\S*) (" + "|".join(COLLECTIVES) + r")(?:-start)?\("
)


def collective_shapes(hlo_text):
    """`(collective, dtype, shape)` of every buffer a collective produces.

    Reads the per-device result shapes of every all-to-all, all-gather,
    all-reduce, reduce-scatter and collective-permute instruction (each
    element of a tuple result; the `-start` half of an async pair) in the
    text of a compiled, SPMD-partitioned HLO module, e.g.
    `jax.jit(f).lower(...).compile().as_text()`.

    Example:
    >>> line = "%a = f32[2,8]{1,0} all-gather(f32[1,8]{1,0} %p), dimensions={0}"
    >>> collective_shapes(line)
    [('all-gather', 'f32', (2, 8))]
    """
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.search(line)
        if not match:
            continue
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            found.append((match.group(2), dtype,
                          tuple(int(d) for d in dims.split(",") if d)))
    return found


def collective_bytes(hlo_text):
    """`{collective: bytes per device}` summed over a compiled HLO module.

    Sums the result buffers found by `collective_shapes`; for an all-to-all
    this includes the part a device keeps for itself.

    Example:
    >>> line = "%a = f32[2,8]{1,0} all-gather(f32[1,8]{1,0} %p), dimensions={0}"
    >>> collective_bytes(line)["all-gather"]
    64
    """
    totals = dict.fromkeys(COLLECTIVES, 0)
    for name, dtype, shape in collective_shapes(hlo_text):
        size = _DTYPE_BYTES.get(dtype, 4)
        for d in shape:
            size *= d
        totals[name] += size
    return totals
