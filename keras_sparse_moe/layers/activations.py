"""Activations by name, with the tanh-approximate GELU of ViT / V-MoE.

`keras.activations.get("gelu")` is the exact (erf) GELU. Flax's `nn.gelu`,
which ViT and V-MoE use in every MLP, defaults to the tanh approximation;
`"gelu_approximate"` (alias `"gelu_tanh"`) names it here, so an expert or MLP
activation given by name round-trips through `get_config`.
"""

import keras


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
def gelu_approximate(x):
    """GELU, tanh approximation: `keras.activations.gelu(x, approximate=True)`.

    Example:
    >>> import numpy as np
    >>> round(float(gelu_approximate(np.float32(1.0))), 6)
    0.841192
    """
    return keras.activations.gelu(x, approximate=True)


EXTRA_ACTIVATIONS = {"gelu_approximate": gelu_approximate, "gelu_tanh": gelu_approximate}


def get_activation(identifier, name="activation"):
    """The activation function for a name, a serialized activation or a callable.

    Args:
        identifier: a Keras activation name (`"gelu"` is the exact GELU),
            `"gelu_approximate"` / `"gelu_tanh"` (tanh-approximate GELU), a
            serialized activation or a callable.
        name: the argument name used in the error message.

    Example:
    >>> get_activation("gelu_approximate").__name__
    'gelu_approximate'
    """
    if isinstance(identifier, str) and identifier in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[identifier]
    try:
        return keras.activations.get(identifier)
    except ValueError:
        raise ValueError(
            f"Argument `{name}` must be a Keras activation name (e.g. 'gelu', 'relu', "
            f"'silu'), one of {sorted(EXTRA_ACTIVATIONS)}, a serialized activation or a "
            f"callable; received {name}={identifier!r}."
        ) from None


def serialize_activation(activation):
    """The config value of an activation: its name for the tanh GELU, else
    `keras.activations.serialize`.

    Example:
    >>> serialize_activation(get_activation("gelu_approximate"))
    'gelu_approximate'
    """
    if activation is gelu_approximate:
        return "gelu_approximate"
    return keras.activations.serialize(activation)
