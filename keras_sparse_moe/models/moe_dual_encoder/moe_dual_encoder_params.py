"""Parameter counts of a `LIMoEBackbone` config, without building it (the
paper-sized preset has ~0.3B parameters)."""

import inspect

from keras_sparse_moe.models.moe_vit.moe_vit_params import moe_vit_param_counts

_VIT_KEYS = (
    "image_shape", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim",
    "num_experts", "top_k", "moe_layers", "router", "capacity_factor",
    "eval_capacity_factor", "moe_kwargs",
)


def limoe_param_counts(config):
    """Trainable parameters of the `LIMoEBackbone` built from `config`.

    The shared tower counts as a `MoEViTBackbone` of the same shape (patch
    embedding, blocks, final norm; see `moe_vit_param_counts` for `active`,
    the parameters applied to one image token), plus the text token and
    position embeddings, the two modality embeddings, the two projections
    and the head's temperature and bias.

    Args:
        config: dict of `LIMoEBackbone` arguments; missing ones take the
            constructor defaults.

    Returns:
        `{"total": int, "active": int}`.

    Example:
    >>> counts = limoe_param_counts({"vocabulary_size": 1000})
    >>> counts["total"] > counts["active"]
    True
    """
    from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import LIMoEBackbone

    defaults = {
        name: p.default
        for name, p in inspect.signature(LIMoEBackbone.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args = {**defaults, **config}
    vit_config = {key: args[key] for key in _VIT_KEYS}
    vit_config["pooling"] = args["image_pooling"]
    counts = moe_vit_param_counts(vit_config)
    dim = args["hidden_dim"]
    embedding_dim = args["embedding_dim"] or dim
    extra = (
        args["vocabulary_size"] * dim
        + args["max_sequence_length"] * dim
        + 2 * dim
        + 2 * dim * embedding_dim
        + 2
    )
    return {"total": counts["total"] + extra, "active": counts["active"] + extra}
