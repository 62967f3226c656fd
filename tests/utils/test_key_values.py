"""keras_sparse_moe.utils.key_values: the `--set KEY=VALUE` parser."""

import pytest

from keras_sparse_moe.utils.key_values import parse_key_values

# Backend-independent (Python only): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend


def test_values_are_json_when_they_parse_else_strings():
    settings = parse_key_values([
        "num_layers=2", "dropout_rate=0.1", "stem_channels=[32, 64]", "capacity_factor=null",
        "pooling=gap", "use_bias=true", "name=a=b", " spaced =3",
    ])
    assert settings == {
        "num_layers": 2, "dropout_rate": 0.1, "stem_channels": [32, 64],
        "capacity_factor": None, "pooling": "gap", "use_bias": True, "name": "a=b",
        "spaced": 3,
    }


def test_later_pairs_win_and_none_is_empty():
    assert parse_key_values(["a=1", "a=2"]) == {"a": 2}
    assert parse_key_values(None) == {}


@pytest.mark.parametrize("pair", ["no_equals", "=3", "  =x"])
def test_bad_pairs_name_the_option_and_the_pair(pair):
    with pytest.raises(ValueError, match=rf"--data-set expects KEY=VALUE .*{pair!r}"):
        parse_key_values([pair], option="--data-set")
