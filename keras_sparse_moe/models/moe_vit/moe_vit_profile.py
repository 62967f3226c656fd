"""Analytic parameter and FLOP profile of `MoEViTBackbone` configs (no
weight is allocated), behind `MoEViTBackbone.profile_config`."""

from keras_sparse_moe.layers.sparse_moe import SparseMoE
from keras_sparse_moe.models.encoder_arguments import check_image_shape
from keras_sparse_moe.models.moe_layer_schedule import block_moe_arguments
from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
from keras_sparse_moe.models.moe_layer_schedule import split_moe_kwargs
from keras_sparse_moe.models.moe_vit.moe_vit_geometry import check_stem_channels
from keras_sparse_moe.models.moe_vit.moe_vit_geometry import stem_geometry
from keras_sparse_moe.profiling.config_arithmetic import assemble_profile
from keras_sparse_moe.profiling.config_arithmetic import check_config_keys
from keras_sparse_moe.profiling.config_arithmetic import init_defaults
from keras_sparse_moe.profiling.config_arithmetic import moe_config_profile
from keras_sparse_moe.profiling.config_arithmetic import vit_dense_profile


def profile_moe_vit_config(cls, config):
    """The `ModelProfile` of the `cls` (`MoEViTBackbone`) that `config` would
    build, computed from the arguments alone (see
    `MoEViTBackbone.profile_config`).

    Example:
    >>> from keras_sparse_moe.models.moe_vit import MoEViTBackbone
    >>> profile_moe_vit_config(MoEViTBackbone, {"image_shape": (8, 8, 1),
    ...     "patch_size": 4, "num_layers": 1, "num_heads": 1, "hidden_dim": 4,
    ...     "mlp_dim": 8, "moe_layers": "none"}).params_total
    272
    """
    check_config_keys(cls, config)
    args = {**init_defaults(cls), **config}
    image_shape, patch = check_image_shape(args["image_shape"], args["patch_size"])
    stem_channels = check_stem_channels(args.get("stem_channels"), patch)
    # The stem's 3x3 convolutions; the patch embedding sees the last one's output.
    stem_params = stem_flops = 0
    channels = image_shape[2]
    for index in range(len(stem_channels)):
        (height, width, out_channels), _ = stem_geometry(
            image_shape, patch, stem_channels[:index + 1]
        )
        kernel = 3 * 3 * channels * out_channels
        stem_params += kernel + out_channels
        stem_flops += 2 * height * width * kernel
        channels = out_channels
    embedded_shape, embedded_patch = stem_geometry(image_shape, patch, stem_channels)
    use_class_token = args["pooling"] == "token"
    dense = vit_dense_profile(
        {**args, "image_shape": embedded_shape, "patch_size": embedded_patch},
        use_class_token, {"patch": True, "mha": True, "mlp": True},
    )
    tokens, dim, mlp = dense["tokens"], dense["dim"], dense["mlp"]
    num_layers = int(args["num_layers"])
    moe_indices = resolve_moe_layers(args["moe_layers"], num_layers)
    shared, per_block = split_moe_kwargs(args["moe_kwargs"], moe_indices)
    base = {key: args[key] for key in
            ("num_experts", "top_k", "router", "capacity_factor", "eval_capacity_factor")}
    moe_defaults = init_defaults(SparseMoE)

    params = stem_params + dense["embedding_params"] + dense["final_params"]
    if args["position_embedding"] == "sincos2d":  # a constant, not a weight
        params -= tokens * dim
    qk_norm_params = 2 * (dim // int(args["num_heads"])) if args["attention_qk_norm"] else 0
    flops = stem_flops + dense["embedding_flops"]
    non_trainable = 0
    moe_profiles = []
    for index in range(num_layers):
        params += dense["block_params"] + qk_norm_params
        flops += dense["block_flops"]
        if index not in moe_indices:
            params += dense["mlp_params"]
            flops += dense["mlp_flops"]
            continue
        moe = {**moe_defaults, **block_moe_arguments(index, base, shared, per_block)}
        moe_profile = moe_config_profile(f"encoder_block_{index}/moe", moe, tokens, dim, mlp)
        moe_profiles.append(moe_profile)
        params += moe_profile.params
        non_trainable += 1 + moe_profile.num_experts  # routing statistics
    return assemble_profile(args.get("name") or cls.__name__, tuple(args["image_shape"]),
                            params, non_trainable, flops, moe_profiles)
