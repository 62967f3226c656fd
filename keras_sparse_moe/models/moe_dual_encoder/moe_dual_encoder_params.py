"""Parameter counts of a `LIMoEBackbone` config, without building it (the
paper-sized preset has ~0.3B parameters)."""

from keras_sparse_moe.models.moe_dual_encoder.limoe_backbone import LIMoEBackbone


def limoe_param_counts(config):
    """Trainable parameters of the `LIMoEBackbone` built from `config`
    (`LIMoEBackbone.param_counts_from_config`, which explains the count).

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
    return LIMoEBackbone.param_counts_from_config(config)
