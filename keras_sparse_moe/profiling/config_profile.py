"""`profile_config(backbone_cls, config)`: the profile of the backbone a
config would build, without building it when the class can compute it.

A backbone class computes its own profile from a config with a class method
`profile_config(config)` returning a `ModelProfile` (e.g.
`MoEViTBackbone.profile_config`); a class that cannot be given that method
(e.g. keras-hub's `ViTBackbone`) gets a function registered with
`register_config_profiler`. Any other class is built and profiled with
`profile`.
"""

import inspect

from keras_sparse_moe.profiling.model_profile import profile

_CONFIG_PROFILERS = {}


def register_config_profiler(backbone_cls, profiler):
    """Register `profiler(backbone_cls, config) -> ModelProfile`, the analytic
    profile of `backbone_cls` configs, for a class that does not define a
    `profile_config` class method of its own (e.g. a keras-hub class).

    Args:
        backbone_cls: the backbone class (exactly this class; subclasses are
            built and profiled unless they have their own profiler).
        profiler: callable `(backbone_cls, config)` returning a `ModelProfile`
            equal to `profile(backbone_cls(**config))`.

    Example:
    >>> import keras_hub
    >>> config_profiler(keras_hub.models.ViTBackbone) is not None
    True
    """
    if not inspect.isclass(backbone_cls):
        raise ValueError(
            f"Argument `backbone_cls` must be a class; received {backbone_cls!r}."
        )
    if not callable(profiler):
        raise ValueError(f"Argument `profiler` must be callable; received {profiler!r}.")
    _CONFIG_PROFILERS[backbone_cls] = profiler


def config_profiler(backbone_cls):
    """The analytic profiler `profile_config` uses for `backbone_cls`: its
    `profile_config` class method, else a registered function (bound to the
    class), else None (the model is built and profiled).

    Example:
    >>> from keras_sparse_moe.models import MoEViTBackbone
    >>> config_profiler(MoEViTBackbone) == MoEViTBackbone.profile_config
    True
    """
    method = getattr(backbone_cls, "profile_config", None)
    if callable(method):
        return method
    profiler = _CONFIG_PROFILERS.get(backbone_cls)
    if profiler is None:
        return None
    return lambda config: profiler(backbone_cls, config)


def profile_config(backbone_cls, config):
    """`profile(backbone_cls(**config))` without building the model.

    Computed analytically for classes with a `profile_config(config)` class
    method (`MoEViTBackbone`) or a registered profiler (keras-hub
    `ViTBackbone`), so no weight is allocated and paper-sized presets are
    cheap; any other class is built and profiled with `profile`.

    Args:
        backbone_cls: the backbone class.
        config: dict of constructor arguments (e.g. from `get_config()` or a
            preset); missing arguments take the constructor defaults.

    Returns:
        A `ModelProfile` equal to `profile(backbone_cls(**config))` (the
        model name is the config's `name` or the class's default name).

    Example:
    >>> from keras_sparse_moe.models import MoEViTBackbone
    >>> result = profile_config(MoEViTBackbone, {
    ...     "image_shape": (224, 224, 3), "patch_size": 16, "num_layers": 12,
    ...     "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072,
    ...     "num_experts": 8, "top_k": 2, "moe_layers": "every_2"})
    >>> round(result.params_total / 1e6), len(result.moe_layers)
    (284, 6)
    """
    if not inspect.isclass(backbone_cls):
        raise ValueError(
            f"Argument `backbone_cls` must be a class; received {backbone_cls!r}."
        )
    if not isinstance(config, dict):
        raise ValueError(f"Argument `config` must be a dict; received {config!r}.")
    profiler = config_profiler(backbone_cls)
    if profiler is not None:
        return profiler(dict(config))
    return profile(backbone_cls(**config))
