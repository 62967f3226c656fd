"""Keyword options that several public functions share with the function
that implements them, declared (with their defaults) in one place."""

import functools
import inspect


def takes_options_of(*sources, exclude=()):
    """Decorator for a function `fn(..., **options)` whose options are the
    keyword-only parameters with defaults of `sources` (the functions they
    are forwarded to), except those in `exclude` or named by `fn` itself.

    The decorated function shows them in its signature (`help`, `inspect`),
    rejects unknown or missing arguments with the `TypeError` Python gives,
    and is called with every option present, its default filled in.

    Example:
    >>> def _impl(x, *, scale=2, shift=0):
    ...     return x * scale + shift
    >>> @takes_options_of(_impl)
    ... def public(x, **options):
    ...     return _impl(x, **options)
    >>> str(inspect.signature(public)), public(3, shift=1)
    ('(x, *, scale=2, shift=0)', 7)
    """
    excluded = set(exclude)

    def decorate(fn):
        own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own} | excluded
        shared = []
        for source in sources:
            for p in inspect.signature(source).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name not in names:
                    shared.append(p)
                    names.add(p.name)
        leading = [p for p in own if p.kind is not p.KEYWORD_ONLY]
        trailing = [p for p in own if p.kind is p.KEYWORD_ONLY]
        signature = inspect.Signature(leading + shared + trailing)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{fn.__name__}() {error}") from None
            bound.apply_defaults()
            return fn(*bound.args, **bound.kwargs)

        wrapper.__signature__ = signature
        return wrapper

    return decorate
