"""Sparse upcycling: turn a dense ViT into a MoE-ViT (Komatsuzaki et al. 2022).

"Sparse Upcycling: Training Mixture-of-Experts from Dense Checkpoints",
https://arxiv.org/abs/2212.05055: every weight of the dense model is copied
into the MoE model, and the MLP of each block that becomes a MoE block is
copied into every one of its experts; only the routers are new.
"""

import numbers

import numpy as np
from keras import ops
from keras_hub.models import Task
from keras_hub.models import ViTBackbone

from keras_sparse_moe.layers.router_registry import get_router_class
from keras_sparse_moe.models.moe_vit import MoEViTBackbone
from keras_sparse_moe.utils.validation import check_float

_ACCEPTED = (
    "a keras_hub.models.ViTBackbone (channels_last) or a MoEViTBackbone without MoE "
    "layers (moe_layers='none')"
)


class _DenseViT:
    """Uniform view of the weights of a dense ViT backbone.

    Attributes: `config` (MoEViTBackbone arguments), `embedding` (a
    keras-hub `ViTPatchingAndEmbedding`), `blocks` (list of dicts with
    `norm1`, `attention`, `norm2`, `mlp_in`, `mlp_out` layers),
    `final_norm`, `mlp_bias` (whether the dense MLPs have biases), `stem`
    (the convolutional stem's `Conv2D` layers, in order; empty without one).
    """

    def __init__(self, config, embedding, blocks, final_norm, mlp_bias, stem=()):
        self.stem = list(stem)
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
        self.final_norm = final_norm
        self.mlp_bias = mlp_bias


def _dtype_name(model):
    policy = model.dtype_policy
    return getattr(policy, "name", policy)


def _from_keras_hub_vit(backbone):
    if getattr(backbone, "data_format", "channels_last") != "channels_last":
        raise ValueError(
            "upcycle supports channels_last ViTBackbones only (MoEViTBackbone takes "
            f"(height, width, channels) images); received data_format="
            f"{backbone.data_format!r}. Rebuild the dense backbone with "
            "data_format='channels_last' (the weights are the same)."
        )
    encoder = backbone.get_layer("vit_encoder")
    blocks = [
        {
            "norm1": block.layer_norm_1,
            "attention": block.mha,
            "norm2": block.layer_norm_2,
            "mlp_in": block.mlp.dense_1,
            "mlp_out": block.mlp.dense_2,
        }
        for block in encoder.encoder_layers
    ]
    config = {
        "image_shape": tuple(backbone.image_shape),
        "patch_size": tuple(backbone.patch_size),
        "num_layers": backbone.num_layers,
        "num_heads": backbone.num_heads,
        "hidden_dim": backbone.hidden_dim,
        "mlp_dim": backbone.mlp_dim,
        "pooling": "token" if backbone.use_class_token else "gap",
        "dropout_rate": backbone.dropout_rate,
        "attention_dropout": backbone.attention_dropout,
        "layer_norm_epsilon": backbone.layer_norm_epsilon,
        "dtype": _dtype_name(backbone),
    }
    return _DenseViT(
        config,
        backbone.get_layer("vit_patching_and_embedding"),
        blocks,
        encoder.layer_norm,
        bool(backbone.use_mlp_bias),
    )


def _from_dense_moe_vit(backbone):
    if backbone.moe_layer_indices:
        raise ValueError(
            f"Argument `dense_backbone` must be {_ACCEPTED}; received a MoEViTBackbone "
            f"whose blocks {list(backbone.moe_layer_indices)} are already MoE."
        )
    config = backbone.get_config()
    keep = (
        "image_shape", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim",
        "pooling", "stem_channels", "dropout_rate", "attention_dropout",
        "stochastic_depth", "layer_norm_epsilon",
    )
    config = {key: config[key] for key in keep}
    config["dtype"] = _dtype_name(backbone)
    blocks = [
        {
            "norm1": block.norm1,
            "attention": block.attention,
            "norm2": block.norm2,
            "mlp_in": block.mlp_in,
            "mlp_out": block.mlp_out,
        }
        for block in backbone.encoder_blocks
    ]
    return _DenseViT(
        config,
        backbone.get_layer("patching_and_embedding"),
        blocks,
        backbone.get_layer("final_norm"),
        True,
        stem=[backbone.get_layer(f"stem_conv_{i}")
              for i in range(len(backbone.stem_channels or ()))],
    )


def _dense_view(dense_backbone):
    if isinstance(dense_backbone, Task):
        raise ValueError(
            f"Argument `dense_backbone` must be {_ACCEPTED}; received the task "
            f"{type(dense_backbone).__name__}. Pass its backbone: "
            "upcycle(model.backbone, ...)."
        )
    if isinstance(dense_backbone, ViTBackbone):
        return _from_keras_hub_vit(dense_backbone)
    if isinstance(dense_backbone, MoEViTBackbone):
        return _from_dense_moe_vit(dense_backbone)
    raise ValueError(
        f"Argument `dense_backbone` must be {_ACCEPTED}; received "
        f"{type(dense_backbone).__name__}. Other architectures have no known mapping of "
        "their MLP weights onto MoE experts."
    )


# ----------------------------------------------------------------------------
# Weight copying
# ----------------------------------------------------------------------------
def _numpy(variable):
    return ops.convert_to_numpy(variable)


def _assign(target, value, what):
    value = np.asarray(value)
    if tuple(target.shape) != value.shape:  # pragma: no cover - guarded by config
        raise ValueError(
            f"Cannot copy {what}: the dense weight has shape {value.shape}, the MoE "
            f"model's {tuple(target.shape)}."
        )
    target.assign(ops.cast(value, target.dtype))


def _copy_optional_bias(target, source_bias, what):
    """Copy a bias, or zero the target's when the dense layer has none."""
    if target is None:
        return
    if source_bias is None:
        _assign(target, np.zeros(tuple(target.shape), "float32"), what)
    else:
        _assign(target, _numpy(source_bias), what)


def _copy_norm(target, source, what):
    for name in ("gamma", "beta"):
        source_weight = getattr(source, name, None)
        target_weight = getattr(target, name, None)
        if target_weight is None:
            continue
        if source_weight is None:  # scale/center disabled: identity values
            value = np.full(tuple(target_weight.shape), 1.0 if name == "gamma" else 0.0)
            _assign(target_weight, value, f"{what}.{name}")
        else:
            _assign(target_weight, _numpy(source_weight), f"{what}.{name}")


def _copy_attention(target, source, what):
    for part in ("query_dense", "key_dense", "value_dense", "output_dense"):
        src, dst = getattr(source, part), getattr(target, part)
        _assign(dst.kernel, _numpy(src.kernel), f"{what}.{part}.kernel")
        _copy_optional_bias(dst.bias, src.bias, f"{what}.{part}.bias")


def _copy_dense(target, source, what):
    _assign(target.kernel, _numpy(source.kernel), f"{what}.kernel")
    _copy_optional_bias(target.bias, source.bias, f"{what}.bias")


def _copy_embedding(target, source):
    if source.use_class_token:
        _assign(target.class_token, _numpy(source.class_token), "class_token")
    _copy_dense(target.patch_embedding, source.patch_embedding, "patch_embedding")
    _assign(
        target.position_embedding.embeddings,
        _numpy(source.position_embedding.embeddings),
        "position_embedding",
    )


def _copy_mlp_into_experts(moe, mlp_in, mlp_out, what):
    experts = moe.experts
    num = experts.num_experts
    _assign(experts.kernel_in, np.stack([_numpy(mlp_in.kernel)] * num), f"{what}.kernel_in")
    _assign(experts.kernel_out, np.stack([_numpy(mlp_out.kernel)] * num), f"{what}.kernel_out")
    if experts.use_bias:
        for bias, dense, label in ((experts.bias_in, mlp_in, "bias_in"),
                                   (experts.bias_out, mlp_out, "bias_out")):
            value = (np.zeros(tuple(bias.shape[1:]), "float32") if dense.bias is None
                     else _numpy(dense.bias))
            _assign(bias, np.stack([value] * num), f"{what}.{label}")


def _init_router(router, stddev, rng):
    if stddev is None:
        return
    shape = tuple(router.kernel.shape)
    router.kernel.assign(rng.normal(0.0, stddev, size=shape).astype("float32"))


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------
def upcycle(
    dense_backbone,
    num_experts=8,
    moe_layers="every_2",
    top_k=2,
    router="token_choice",
    capacity_factor=1.25,
    eval_capacity_factor=None,
    router_stddev=0.02,
    seed=None,
    name=None,
    **moe_kwargs,
):
    """Sparse upcycling of a dense ViT into a `MoEViTBackbone`.

    Following Komatsuzaki et al. 2022 (https://arxiv.org/abs/2212.05055):
    the patch embedding, class token, position embeddings, attention
    layers, LayerNorms and the dense MLPs of the blocks that stay dense are
    copied; in each block listed by `moe_layers` the dense MLP
    (`W1, b1, W2, b2`) is copied into every expert (`kernel_in[e] = W1`,
    `bias_in[e] = b1`, `kernel_out[e] = W2`, `bias_out[e] = b2`) and a new
    router is initialised with small random weights (normal, std
    `router_stddev`). Dropout rates, LayerNorm epsilon, pooling (class
    token or not) and the dtype policy are taken from the dense model.

    Function preservation: every expert of a block is the dense MLP, so a
    token's MoE output is `sum(gates) * MLP(x)`. With token-choice routing,
    `renormalize_gates=True` (the default here for token choice, so the
    top-k gates sum to 1) and no dropped assignment (`capacity_factor=None`
    and `eval_capacity_factor=None`, or factors with
    `capacity >= group_size`), the upcycled model computes exactly the
    dense model's function at initialisation. With capacity limits some
    tokens lose an expert (the residual still carries them); expert-choice
    and Soft MoE routing do not preserve the function (a token may be
    picked by several or no experts, or slots mix tokens) but start from
    the same expert weights.

    A dense model without some biases (keras-hub `use_mha_bias=False`,
    `use_mlp_bias=False`, `use_patch_bias=False`) is represented exactly
    with those biases set to zero (they become trainable in the MoE model);
    the experts get `use_bias=False` when the dense MLP has no biases,
    unless `use_bias` is given.

    Args:
        dense_backbone: a keras-hub `ViTBackbone` (channels_last) or a
            `MoEViTBackbone` with `moe_layers="none"`. Not modified.
        num_experts: int >= 1, experts per MoE block.
        moe_layers: which blocks become MoE (`"every_2"`, `"last_2"`,
            `"all"`, a list of block indices; see `resolve_moe_layers`).
        top_k: int, experts per token.
        router: `"token_choice"`, `"expert_choice"` or `"soft"`.
        capacity_factor: float > 0 or None (dropless), training capacity.
        eval_capacity_factor: float > 0 or None (same as training).
        router_stddev: float >= 0 or None; std of the normal router
            initialisation (None keeps the router's own initializer).
        seed: int or None, seed of the router initialisation.
        name: None or the name of the new backbone.
        **moe_kwargs: further `SparseMoE` arguments for every MoE block,
            e.g. `group_size`, `renormalize_gates`, `noise_std`,
            `batch_priority`, `slots_per_expert`, aux-loss weights. The
            experts must compute the dense MLP, so `gated=True` or an
            `activation` other than `"gelu"` are rejected.

    Returns:
        A new `MoEViTBackbone`.

    Example:
    >>> import numpy as np
    >>> import keras_hub
    >>> dense = keras_hub.models.ViTBackbone(
    ...     image_shape=(8, 8, 3), patch_size=4, num_layers=2, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32)
    >>> moe = upcycle(dense, num_experts=4, top_k=2, capacity_factor=None)
    >>> moe.moe_layer_indices
    (1,)
    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> bool(np.allclose(moe.predict(x, verbose=0), dense.predict(x, verbose=0),
    ...                  atol=1e-5))
    True
    """
    source = _dense_view(dense_backbone)
    if router_stddev is not None:
        router_stddev = check_float("router_stddev", router_stddev, minimum=0.0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"Argument `seed` must be None or an int; received seed={seed!r}.")
    if moe_kwargs.get("gated", False):
        raise ValueError(
            "Argument `gated` must be False for upcycling: every expert starts as a copy "
            "of the dense (non-gated) MLP; received gated=True."
        )
    activation = moe_kwargs.get("activation", "gelu")
    if activation != "gelu":
        raise ValueError(
            "Argument `activation` must be 'gelu' for upcycling (the activation of the "
            f"dense ViT MLP, which every expert copies); received activation={activation!r}."
        )
    if source.mlp_bias is False and "use_bias" not in moe_kwargs:
        moe_kwargs["use_bias"] = False
    if moe_kwargs.get("use_bias", True) is False and source.mlp_bias:
        raise ValueError(
            "Argument `use_bias` must be True (the default) when the dense MLP has "
            "biases: the experts copy them; received use_bias=False."
        )
    if "renormalize_gates" in get_router_class(router).option_names():
        moe_kwargs.setdefault("renormalize_gates", True)  # top-k gates sum to 1

    config = dict(source.config)
    config.update(
        num_experts=num_experts,
        top_k=top_k,
        moe_layers=moe_layers,
        router=router,
        capacity_factor=capacity_factor,
        eval_capacity_factor=eval_capacity_factor,
        moe_kwargs=moe_kwargs or None,
    )
    if name is not None:
        config["name"] = name
    moe_backbone = MoEViTBackbone(**config)

    rng = np.random.default_rng(seed)
    for index, conv in enumerate(source.stem):
        _copy_dense(moe_backbone.get_layer(f"stem_conv_{index}"), conv, f"stem_conv_{index}")
    _copy_embedding(moe_backbone.get_layer("patching_and_embedding"), source.embedding)
    for index, (block, dense) in enumerate(zip(moe_backbone.encoder_blocks, source.blocks)):
        what = f"encoder_block_{index}"
        _copy_norm(block.norm1, dense["norm1"], f"{what}.norm1")
        _copy_attention(block.attention, dense["attention"], f"{what}.attention")
        _copy_norm(block.norm2, dense["norm2"], f"{what}.norm2")
        if block.is_moe:
            _copy_mlp_into_experts(block.mlp, dense["mlp_in"], dense["mlp_out"], f"{what}.moe")
            _init_router(block.mlp.router, router_stddev, rng)
        else:
            _copy_dense(block.mlp_in, dense["mlp_in"], f"{what}.mlp_in")
            _copy_dense(block.mlp_out, dense["mlp_out"], f"{what}.mlp_out")
    _copy_norm(moe_backbone.get_layer("final_norm"), source.final_norm, "final_norm")
    return moe_backbone
