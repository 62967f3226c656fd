"""Parameter counts of a `MoEViTBackbone` config, without building it."""

from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone


def moe_vit_param_counts(config):
    """Trainable and active-per-token parameters of the `MoEViTBackbone`
    built from `config`, computed analytically (no weight is allocated, so
    paper-sized configs are cheap) by `MoEViTBackbone.profile_config`; the
    docstring of `keras_sparse_moe.profile` defines "active".

    Args:
        config: dict of `MoEViTBackbone` constructor arguments (as from
            `get_config()`); missing ones take the constructor defaults.

    Returns:
        `{"total": int, "active": int}`.

    Example:
    >>> counts = moe_vit_param_counts({"num_layers": 12, "hidden_dim": 768,
    ...     "num_heads": 12, "mlp_dim": 3072, "num_experts": 8})
    >>> counts["total"] > counts["active"]
    True
    """
    return MoEViTBackbone.param_counts_from_config(config)
