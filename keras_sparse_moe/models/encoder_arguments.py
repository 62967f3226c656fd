"""The arguments every MoE transformer encoder of the zoo shares
(`MoEViTBackbone`, `LIMoEBackbone`, `MoETextEncoder`): their validation
(including the image and patch shapes of the image encoders), and the
`SparseMoE` arguments of each block derived from them."""

import collections
import numbers

from keras_sparse_moe.layers.router_registry import get_router_class
from keras_sparse_moe.models.moe_layer_schedule import block_moe_arguments
from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
from keras_sparse_moe.models.moe_layer_schedule import split_moe_kwargs
from keras_sparse_moe.utils.validation import check_capacity_factor
from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int

EncoderArguments = collections.namedtuple(
    "EncoderArguments",
    [
        "num_layers", "num_heads", "hidden_dim", "mlp_dim", "num_experts", "top_k",
        "router", "capacity_factor", "eval_capacity_factor", "moe_indices", "block_moe",
        "dropout_rate", "attention_dropout", "stochastic_depth", "layer_norm_epsilon",
    ],
)
EncoderArguments.__doc__ = """Validated encoder arguments; `moe_indices` is the
sorted tuple of MoE blocks and `block_moe[i]` the `SparseMoE` arguments of
block `i` (None for a dense block)."""


def check_rate(name, value):
    """A float in [0, 1) (dropout, stochastic depth)."""
    value = check_float(name, value, minimum=0.0)
    if value >= 1.0:
        raise ValueError(f"Argument `{name}` must be in [0, 1); received {name}={value}.")
    return value


def check_image_shape(image_shape, patch_size):
    """Validated `(image_shape, (patch_h, patch_w))` of an image encoder: a
    (height, width, channels) of positive ints whose sides the patch size
    (an int or a pair) divides.

    Example:
    >>> check_image_shape([16, 8, 1], 4)
    ((16, 8, 1), (4, 4))
    """
    if (
        not isinstance(image_shape, (list, tuple))
        or len(image_shape) != 3
        or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
            for v in image_shape
        )
    ):
        raise ValueError(
            "Argument `image_shape` must be (height, width, channels) with positive "
            f"integers; received image_shape={image_shape!r}."
        )
    patch = (patch_size, patch_size) if isinstance(patch_size, numbers.Integral) else patch_size
    if (
        isinstance(patch_size, bool)
        or not isinstance(patch, (list, tuple))
        or len(patch) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                   for v in patch)
    ):
        raise ValueError(
            "Argument `patch_size` must be a positive int or a (height, width) pair; "
            f"received patch_size={patch_size!r}."
        )
    height, width = int(image_shape[0]), int(image_shape[1])
    if height % patch[0] or width % patch[1]:
        raise ValueError(
            f"The image size must be divisible by the patch size; received "
            f"image_shape={tuple(image_shape)} and patch_size={patch_size!r} "
            f"({height}x{width} is not a multiple of {patch[0]}x{patch[1]})."
        )
    return tuple(int(v) for v in image_shape), (int(patch[0]), int(patch[1]))


def check_encoder_arguments(
    *,
    num_layers,
    num_heads,
    hidden_dim,
    mlp_dim,
    num_experts,
    top_k,
    router,
    capacity_factor,
    eval_capacity_factor,
    moe_layers,
    moe_kwargs,
    dropout_rate,
    attention_dropout,
    layer_norm_epsilon,
    stochastic_depth=0.0,
):
    """Validate the shared encoder arguments (a `ValueError` naming the
    argument, the value and what is allowed) and derive each block's MoE
    arguments.

    Returns:
        An `EncoderArguments`.

    Example:
    >>> args = check_encoder_arguments(
    ...     num_layers=4, num_heads=2, hidden_dim=8, mlp_dim=16, num_experts=4, top_k=2,
    ...     router="token_choice", capacity_factor=1.25, eval_capacity_factor=None,
    ...     moe_layers="every_2", moe_kwargs=None, dropout_rate=0.0, attention_dropout=0.0,
    ...     layer_norm_epsilon=1e-6)
    >>> args.moe_indices, args.block_moe[0], args.block_moe[1]["num_experts"]
    ((1, 3), None, 4)
    """
    num_layers = check_int("num_layers", num_layers, minimum=1)
    num_heads = check_int("num_heads", num_heads, minimum=1)
    hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
    if hidden_dim % num_heads:
        raise ValueError(
            f"Argument `hidden_dim`={hidden_dim} must be divisible by "
            f"num_heads={num_heads}."
        )
    mlp_dim = check_int("mlp_dim", mlp_dim, minimum=1)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    get_router_class(router)  # a registered router name
    capacity_factor = check_capacity_factor("capacity_factor", capacity_factor)
    eval_capacity_factor = check_capacity_factor("eval_capacity_factor", eval_capacity_factor)
    moe_indices = resolve_moe_layers(moe_layers, num_layers)
    shared_moe, per_block_moe = split_moe_kwargs(moe_kwargs, moe_indices)
    base_moe = {
        "num_experts": num_experts,
        "top_k": top_k,
        "router": router,
        "capacity_factor": capacity_factor,
        "eval_capacity_factor": eval_capacity_factor,
    }
    block_moe = [
        block_moe_arguments(index, base_moe, shared_moe, per_block_moe)
        if index in moe_indices else None
        for index in range(num_layers)
    ]
    return EncoderArguments(
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_experts=num_experts,
        top_k=top_k,
        router=router,
        capacity_factor=capacity_factor,
        eval_capacity_factor=eval_capacity_factor,
        moe_indices=moe_indices,
        block_moe=block_moe,
        dropout_rate=check_rate("dropout_rate", dropout_rate),
        attention_dropout=check_rate("attention_dropout", attention_dropout),
        stochastic_depth=check_rate("stochastic_depth", stochastic_depth),
        layer_norm_epsilon=check_float("layer_norm_epsilon", layer_norm_epsilon, 0.0, strict=True),
    )


# The constructor arguments every encoder stores as attributes and returns
# from `get_config`, in config order.
SHARED_CONFIG_KEYS = (
    "num_layers", "num_heads", "hidden_dim", "mlp_dim", "num_experts", "top_k", "moe_layers",
    "router", "capacity_factor", "eval_capacity_factor", "moe_kwargs", "dropout_rate",
    "attention_dropout", "layer_norm_epsilon",
)


def store_encoder_arguments(model, args, moe_layers, moe_kwargs):
    """Set the shared constructor arguments on `model` as attributes (the
    validated values of `args`; `moe_layers` and `moe_kwargs` as given, copied),
    plus `moe_layer_indices`.

    Args:
        model: the encoder (any object that takes attributes).
        args: the result of `check_encoder_arguments`.
        moe_layers: the `moe_layers` argument as the user gave it (kept for
            `get_config`; a list or tuple is stored as a list).
        moe_kwargs: None or the per-block router options as given.

    Example:
    >>> import types
    >>> args = check_encoder_arguments(
    ...     num_layers=2, num_heads=1, hidden_dim=4, mlp_dim=8, num_experts=2, top_k=1,
    ...     router="token_choice", capacity_factor=1.0, eval_capacity_factor=None,
    ...     moe_layers=[1], moe_kwargs=None, dropout_rate=0.0, attention_dropout=0.0,
    ...     layer_norm_epsilon=1e-6)
    >>> model = types.SimpleNamespace()
    >>> store_encoder_arguments(model, args, [1], None)
    >>> model.moe_layers, model.moe_layer_indices, model.top_k
    ([1], (1,), 1)
    """
    for key in SHARED_CONFIG_KEYS:
        if key not in ("moe_layers", "moe_kwargs"):
            setattr(model, key, getattr(args, key))
    model.moe_layers = list(moe_layers) if isinstance(moe_layers, (list, tuple)) else moe_layers
    model.moe_kwargs = None if moe_kwargs is None else dict(moe_kwargs)
    model.moe_layer_indices = args.moe_indices


def shared_encoder_config(model):
    """The shared arguments of `model` for its `get_config`; `moe_kwargs` keys
    become strings (JSON object keys; block indices come back as digit
    strings, which the schedule accepts).

    Args:
        model: an encoder on which `store_encoder_arguments` has run.

    Returns:
        A dict of the `SHARED_CONFIG_KEYS`, in that order.

    Example:
    >>> import types
    >>> model = types.SimpleNamespace(**{k: 0 for k in SHARED_CONFIG_KEYS})
    >>> model.moe_kwargs = {1: {"top_k": 1}}
    >>> shared_encoder_config(model)["moe_kwargs"]
    {'1': {'top_k': 1}}
    """
    config = {key: getattr(model, key) for key in SHARED_CONFIG_KEYS}
    if config["moe_kwargs"] is not None:
        config["moe_kwargs"] = {str(k): v for k, v in config["moe_kwargs"].items()}
    return config
