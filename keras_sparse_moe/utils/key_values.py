"""`KEY=VALUE` command-line settings (the `--set` option of the command line
and of the recipe scripts)."""

import json


def parse_key_values(pairs, option="--set"):
    """`["num_layers=2", "pooling=gap"]` -> `{"num_layers": 2, "pooling": "gap"}`.

    Each value is read as JSON when it parses (numbers, booleans, null,
    lists such as `[32,64]`), otherwise kept as a string.

    Args:
        pairs: None or an iterable of `"KEY=VALUE"` strings.
        option: the option's name, for error messages.

    Returns:
        dict (later pairs override earlier ones).

    Raises:
        ValueError: a pair without `=` or with an empty key.

    Example:
    >>> parse_key_values(["dropout_rate=0.1", "stem_channels=[32,64]", "pooling=gap"])
    {'dropout_rate': 0.1, 'stem_channels': [32, 64], 'pooling': 'gap'}
    """
    settings = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"{option} expects KEY=VALUE (e.g. {option} dropout_rate=0.1); received {pair!r}"
            )
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return settings
