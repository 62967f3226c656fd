"""Routers by name: `register_router`, `get_router_class`, `registered_routers`.

`SparseMoE(router="token_choice")` looks the router class up here. A new
router is a `Router` subclass in its own file plus one registration line
(`@register_router("my_router")`); it is then usable by name everywhere a
router name is accepted (`SparseMoE`, the model configs, `profile`), and a
saved model stores just the name and the router's options. The built-in routers
register themselves when `keras_sparse_moe.layers` is imported.
"""

import difflib

import keras

from keras_sparse_moe.layers.router_base import MOE_ARGUMENTS
from keras_sparse_moe.layers.router_base import Router

_REGISTRY = {}


def register_router(name, cls=None):
    """Register a `Router` subclass under `name`.

    Use as a class decorator, `@register_router("my_router")`, or call
    `register_router("my_router", MyRouter)`. Registering the same class
    again under its name is a no-op; another class under a taken name is an
    error.

    Args:
        name: non-empty string, the name given as `SparseMoE(router=name)`.
        cls: the router class, or None to return a decorator.

    Returns:
        `cls` (or a decorator returning its argument).

    Example:
    >>> from keras_sparse_moe.layers import TokenChoiceRouter
    >>> @register_router("greedy_top1")
    ... class GreedyTop1(TokenChoiceRouter):
    ...     def __init__(self, num_experts, **kwargs):
    ...         kwargs.update(top_k=1, noise_std=0.0)
    ...         super().__init__(num_experts, **kwargs)
    >>> "greedy_top1" in registered_routers()
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Argument `name` of register_router must be a non-empty string; received {name!r}."
        )

    def register(router_cls):
        if not (isinstance(router_cls, type) and issubclass(router_cls, Router)):
            raise ValueError(
                f"register_router({name!r}) needs a subclass of keras_sparse_moe.layers.Router; "
                f"received {router_cls!r}."
            )
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not router_cls and (
            existing.__module__, existing.__qualname__
        ) != (router_cls.__module__, router_cls.__qualname__):
            raise ValueError(
                f"Router name {name!r} is already registered for {existing.__qualname__}; "
                f"choose another name for {router_cls.__qualname__}."
            )
        _REGISTRY[name] = router_cls
        router_cls.router_name = name
        return router_cls

    return register if cls is None else register(cls)


def registered_routers():
    """Sorted names of the registered routers.

    Example:
    >>> {"token_choice", "expert_choice", "soft"} <= set(registered_routers())
    True
    """
    return sorted(_REGISTRY)


def get_router_class(name):
    """The `Router` subclass registered under `name`.

    Raises:
        ValueError: naming the unknown router, the registered names and the
            closest match.

    Example:
    >>> get_router_class("soft").__name__
    'SoftRouter'
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    names = sorted(_REGISTRY)
    hint = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(
        f"Argument `router` must be one of the registered routers {names} (or a Router "
        f"instance); received router={name!r}.{hint} New routers are added with "
        "keras_sparse_moe.layers.register_router."
    )


def router_option_names():
    """Every option name some registered router takes (see
    `Router.option_names`), without the arguments `SparseMoE` has itself
    (`num_experts`, `top_k`, the capacity factors, `kernel_initializer`)."""
    names = set()
    for cls in _REGISTRY.values():
        names |= cls.option_names()
    return names - set(MOE_ARGUMENTS)


def make_router(router, num_experts, top_k, capacity_factor, eval_capacity_factor,
                kernel_initializer=None, name="router", **options):
    """A router instance for `SparseMoE`.

    Args:
        router: a registered name (the router is built from the other
            arguments), a `Router` instance (used as is; `options` must be
            empty and its `num_experts` must match) or a serialized router
            dict `{"class_name": ..., "config": {...}}` (`class_name`: a
            registered name or a Keras registered class name).
        num_experts, top_k, capacity_factor, eval_capacity_factor: the
            `SparseMoE` arguments, passed to routers that take them.
        kernel_initializer: initializer of the router projection, or None
            for the router's default.
        name: layer name of a router built here.
        **options: router options (constructor arguments of the router
            class). Options of other registered routers are ignored, so one
            set of flat `SparseMoE` arguments serves every router.

    Example:
    >>> router = make_router("token_choice", 8, 2, 1.25, None, noise_std=0.0)
    >>> type(router).__name__, router.noise_std
    ('TokenChoiceRouter', 0.0)
    """
    if isinstance(router, dict):
        config = dict(router.get("config") or {})
        if router.get("class_name") in registered_routers():
            router = get_router_class(router["class_name"]).from_config(
                {"num_experts": num_experts, **config}
            )
        else:
            router = keras.saving.deserialize_keras_object(router)
        if not isinstance(router, Router):
            raise ValueError(
                "Argument `router` given as a dict must describe a Router; it deserialized to "
                f"{router!r}."
            )
    if isinstance(router, Router):
        if options:
            raise ValueError(
                f"Router options {sorted(options)} were given together with a Router "
                "instance; set them on the router instead."
            )
        if router.num_experts != num_experts:
            raise ValueError(
                f"Argument `router` has num_experts={router.num_experts}, but the layer has "
                f"num_experts={num_experts}; they must match."
            )
        if _REGISTRY.get(type(router).router_name) is not type(router):
            raise ValueError(
                f"Argument `router` is a {type(router).__name__}, which is not registered; "
                "register its class with keras_sparse_moe.layers.register_router."
            )
        return router
    cls = get_router_class(router)
    accepted = cls.option_names()
    unknown = set(options) - router_option_names()
    if unknown:
        raise ValueError(
            f"Unknown router options {sorted(unknown)} for router={router!r}; it takes "
            f"{sorted(accepted & router_option_names())}."
        )
    arguments = {
        "num_experts": num_experts,
        "top_k": top_k,
        "capacity_factor": capacity_factor,
        "eval_capacity_factor": eval_capacity_factor,
        **options,
    }
    if kernel_initializer is not None:
        arguments["kernel_initializer"] = kernel_initializer
    arguments = {key: value for key, value in arguments.items() if key in accepted}
    return cls(name=name, **arguments)
