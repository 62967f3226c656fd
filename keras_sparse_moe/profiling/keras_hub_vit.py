"""Analytic profile of keras-hub's dense `ViTBackbone` configs, registered
with `profile_config` (keras-hub's class cannot carry the class method)."""

from keras_hub.models import ViTBackbone

from keras_sparse_moe.profiling.config_arithmetic import assemble_profile
from keras_sparse_moe.profiling.config_arithmetic import check_config_keys
from keras_sparse_moe.profiling.config_arithmetic import init_defaults
from keras_sparse_moe.profiling.config_arithmetic import vit_dense_profile
from keras_sparse_moe.profiling.config_profile import register_config_profiler


def profile_keras_hub_vit_config(cls, config):
    """The `ModelProfile` of the keras-hub `ViTBackbone` (channels_last) that
    `config` would build: the dense ViT that `keras_sparse_moe.upcycle`
    starts from, for comparing it with its MoE version. Registered as the
    config profiler of `keras_hub.models.ViTBackbone`.

    Example:
    >>> from keras_hub.models import ViTBackbone
    >>> result = profile_keras_hub_vit_config(ViTBackbone, {
    ...     "image_shape": (224, 224, 3), "patch_size": 16, "num_layers": 12,
    ...     "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072})
    >>> round(result.params_total / 1e6)
    86
    """
    check_config_keys(cls, config)
    args = {**init_defaults(cls), **config}
    if args.get("data_format") not in (None, "channels_last"):
        raise ValueError(
            "profile_config supports channels_last ViTBackbone configs only; received "
            f"data_format={args['data_format']!r}."
        )
    biases = {"patch": args["use_patch_bias"], "mha": args["use_mha_bias"],
              "mlp": args["use_mlp_bias"]}
    dense = vit_dense_profile(args, args["use_class_token"], biases)
    layers = int(args["num_layers"])
    params = (dense["embedding_params"] + dense["final_params"]
              + layers * (dense["block_params"] + dense["mlp_params"]))
    flops = dense["embedding_flops"] + layers * (dense["block_flops"] + dense["mlp_flops"])
    return assemble_profile(args.get("name") or cls.__name__, tuple(args["image_shape"]),
                            params, 0, flops, [])


register_config_profiler(ViTBackbone, profile_keras_hub_vit_config)
