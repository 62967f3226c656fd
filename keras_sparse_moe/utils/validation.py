"""Argument checks that raise `ValueError`s naming the argument, the value
received and what is allowed."""

import difflib
import math
import numbers


def check_int(name, value, minimum=None, maximum=None):
    """Return `value` as an int, or raise a `ValueError` naming `name`.

    Example:
    >>> check_int("num_experts", 8, minimum=1)
    8
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Argument `{name}` must be an integer; received {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"Argument `{name}` must be >= {minimum}; received {name}={value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"Argument `{name}` must be <= {maximum}; received {name}={value}.")
    return value


def check_float(name, value, minimum=None, strict=False, allow_none=False):
    """Return `value` as a finite float (or None when allowed).

    Example:
    >>> check_float("learning_rate", 1e-3, minimum=0.0, strict=True)
    0.001
    >>> check_float("learning_rate", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: Argument `learning_rate` must be a finite number; received learning_rate=nan.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Argument `{name}` must be a number; received {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Argument `{name}` must be a finite number; received {name}={value}.")
    if minimum is not None:
        if (strict and value <= minimum) or (not strict and value < minimum):
            op = ">" if strict else ">="
            raise ValueError(f"Argument `{name}` must be {op} {minimum}; received {name}={value}.")
    return value


def check_capacity_factor(name, value):
    """A capacity factor is a number > 0, or None (dropless / same as training)."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(
            f"Argument `{name}` must be a finite number > 0, or None for no token "
            f"dropping; received {name}={value!r}."
        )
    return float(value)


def check_data_options(data_options):
    """`data_options` as a new dict (None -> {}): more keyword arguments for a
    dataset source, e.g. `{"data_dir": ..., "download": False}` for `tfds:`.

    Example:
    >>> check_data_options(None), check_data_options({"download": False})
    ({}, {'download': False})
    """
    if data_options is None:
        return {}
    if not isinstance(data_options, dict):
        raise ValueError(
            "Argument `data_options` must be None or a dict of dataset options (e.g. "
            f"{{'data_dir': 'path', 'download': False}}); received {data_options!r}."
        )
    return dict(data_options)


def check_choice(name, value, choices):
    """Check that `value` is one of `choices`, suggesting the closest."""
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Argument `{name}` must be one of {sorted(choices)}; received {value!r}.{hint}"
    )
