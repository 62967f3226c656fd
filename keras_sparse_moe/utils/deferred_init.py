"""Building a model whose weights are loaded next, without running its
random initializers first (JAX).

On JAX every random initializer of a new shape is a compiled program:
building a small ViT compiles a couple of dozen of them (about 0.2 s each
on a CPU), only for the loaded weights to replace their values.
`build_then_load` builds the model inside Keras's `StatelessScope`, which
leaves the new variables uninitialized, loads the weights, and then
initializes with their own initializers only the variables that loading
did not assign.

This module uses Keras internals (its list of pending variables, a
variable's unset value and its deferred initialization); it is the only
place in the package that does. On the other
backends (whose initializers are plain eager ops), under a
`keras.distribution`, inside another `StatelessScope` or with a Keras laid
out differently, the model is built and loaded as usual.
"""

import keras

_PENDING = "uninitialized_variables"


def _keras_state():
    """Keras's global state module, or None where it is not as expected."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - another Keras layout
        return None
    if not hasattr(global_state, "get_global_attribute"):  # pragma: no cover
        return None
    return global_state


def _defers(state):
    """Deferring is safe: JAX, Keras's internals as expected, not inside a
    `StatelessScope`, and no `keras.distribution` (whose variable layouts
    are set when a variable is initialized)."""
    return (
        keras.backend.backend() == "jax"
        and state is not None
        and state.get_global_attribute("stateless_scope") is None
        and keras.distribution.distribution() is None
    )


def build_then_load(build, load):
    """`build()` a model, then `load(model)` its weights; on JAX without
    running the random initializers that loading overwrites.

    Args:
        build: a function of no arguments returning the model (or layer).
        load: a function of the model that assigns (some of) its variables.

    Returns:
        The model. Variables `load` did not assign hold their initializers'
        values, as after a plain build. When `build` or `load` raises, the
        error propagates and the half-built model's variables are dropped.

    Example:
    >>> import keras, numpy as np
    >>> def build():
    ...     layer = keras.layers.Dense(3)
    ...     layer.build((None, 2))
    ...     return layer
    >>> layer = build_then_load(build, lambda layer: layer.kernel.assign(np.ones((2, 3))))
    >>> float(keras.ops.sum(layer(np.ones((1, 2), "float32"))))
    6.0
    """
    state = _keras_state()
    if not _defers(state):
        model = build()
        load(model)
        return model
    before = {id(v) for v in state.get_global_attribute(_PENDING) or []}
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = build()
    finally:
        # Keras must not initialize the new variables itself (it would refuse
        # the loaded ones): they are taken off its list, also when `build`
        # fails, and the ones loading leaves unset are initialized below.
        pending = state.get_global_attribute(_PENDING) or []
        created = [v for v in pending if id(v) not in before]
        state.set_global_attribute(_PENDING, [v for v in pending if id(v) in before])
    load(model)
    for variable in created:
        if getattr(variable, "_value", None) is None:  # not loaded: its initializer
            variable._deferred_initialize()
    return model
