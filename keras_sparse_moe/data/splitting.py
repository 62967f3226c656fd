"""Deterministic train / validation / test splits.

Splits never depend on a training seed, so changing the seed of a run can
never move a test example into training.
"""

import hashlib

import numpy as np

SPLITS = ("train", "validation", "test", "all")


def check_fraction(name, value, allow_zero=True):
    """Check a split fraction in [0, 1) (or (0, 1) when `allow_zero=False`).

    Example:
    >>> check_fraction("validation_fraction", 0.1)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Argument `{name}` must be a number in [0, 1); received {value!r}.")
    value = float(value)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"Argument `{name}` must be in {interval}; received {name}={value}.")
    return value


def num_held_out(count, fraction):
    """How many of `count` examples a `fraction` holds out: rounded, and at
    least 1 (when `fraction > 0` and `count >= 2`), leaving at least 1.

    Example:
    >>> num_held_out(1438, 0.1), num_held_out(5, 0.1), num_held_out(1, 0.5)
    (144, 1, 0)
    """
    if fraction <= 0 or count < 2:
        return 0
    return int(min(max(1, round(count * fraction)), count - 1))


def stable_order(keys):
    """Indices that sort `keys` (strings) by the MD5 hash of each key: a
    pseudo-random order that is the same on every machine and run.

    Example:
    >>> sorted(stable_order(["a", "b", "c"])) == [0, 1, 2]
    True
    """
    digests = [hashlib.md5(str(k).encode("utf-8")).hexdigest() for k in keys]
    return sorted(range(len(keys)), key=lambda i: (digests[i], str(keys[i])))


def stratified_split(keys, labels, fraction):
    """Split example indices into (kept, held_out), per class.

    Within each class the examples are put in `stable_order` of their keys
    (e.g. relative file paths) and the last `num_held_out(n, fraction)` are
    held out, so every class with >= 2 examples appears in both parts.
    `labels` may be None (one group).

    Example:
    >>> kept, held = stratified_split([f"f{i}" for i in range(10)], [0] * 5 + [1] * 5, 0.2)
    >>> len(kept), len(held), sorted(set(np.array([0] * 5 + [1] * 5)[held].tolist()))
    (8, 2, [0, 1])
    """
    keys = list(keys)
    labels = np.zeros(len(keys), np.int64) if labels is None else np.asarray(labels)
    kept, held = [], []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        order = [members[i] for i in stable_order([keys[i] for i in members])]
        n = num_held_out(len(order), fraction)
        kept.extend(order[: len(order) - n])
        held.extend(order[len(order) - n :])
    return np.sort(np.asarray(kept, np.int64)), np.sort(np.asarray(held, np.int64))
