"""Parameter counts of a `MoEViTBackbone` config, without building it."""


def moe_vit_param_counts(config):
    """Trainable and active-per-token parameters of the `MoEViTBackbone`
    built from `config`, computed analytically (no weight is allocated, so
    paper-sized configs are cheap) by `keras_sparse_moe.profile.profile_config`,
    whose docstring defines "active".

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
    from keras_sparse_moe.models.moe_vit.moe_vit_backbone import MoEViTBackbone
    from keras_sparse_moe.profile import profile_config

    report = profile_config(MoEViTBackbone, dict(config))
    return {"total": int(report.params_total), "active": int(report.params_active)}
