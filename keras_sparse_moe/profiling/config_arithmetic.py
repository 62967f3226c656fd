"""Analytic parameter and FLOP arithmetic of transformer encoders with
sparse MoE blocks, from constructor arguments alone (no weight is
allocated): the pieces the model families assemble into the
`ModelProfile` of a config (conventions in `keras_sparse_moe.profile`)."""

import inspect
import numbers

from keras_sparse_moe.layers.router_registry import make_router
from keras_sparse_moe.layers.router_registry import router_option_names
from keras_sparse_moe.profiling.results import ModelProfile
from keras_sparse_moe.profiling.results import MoELayerProfile


def init_defaults(cls):
    """The constructor defaults of `cls`: {argument name: default}."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def vit_dense_profile(args, use_class_token, biases):
    """Embedding, per-block and final parameter/FLOP counts of a ViT."""
    height, width, channels = (int(v) for v in args["image_shape"])
    patch = args["patch_size"]
    patch = (patch, patch) if isinstance(patch, numbers.Integral) else tuple(patch)
    dim, mlp, heads = int(args["hidden_dim"]), int(args["mlp_dim"]), int(args["num_heads"])
    patches = (height // patch[0]) * (width // patch[1])
    tokens = patches + int(use_class_token)
    conv_kernel = patch[0] * patch[1] * channels * dim
    embedding_params = conv_kernel + (dim if biases["patch"] else 0) + tokens * dim
    embedding_params += dim if use_class_token else 0
    key_dim = dim // heads
    attention_params = 4 * dim * heads * key_dim
    attention_params += (3 * heads * key_dim + dim) if biases["mha"] else 0
    block_params = attention_params + 4 * dim  # + two LayerNorms
    mlp_params = 2 * dim * mlp + ((mlp + dim) if biases["mlp"] else 0)
    block_flops = 2 * tokens * 4 * dim * heads * key_dim + 2 * tokens * tokens * heads * 2 * key_dim
    return {
        "tokens": tokens,
        "dim": dim,
        "mlp": mlp,
        "embedding_params": embedding_params,
        "embedding_flops": 2 * patches * conv_kernel,
        "block_params": block_params,
        "block_flops": block_flops,
        "mlp_params": mlp_params,
        "mlp_flops": 2 * tokens * 2 * dim * mlp,
        "final_params": 2 * dim,
    }


def moe_config_profile(name, moe, tokens, dim, mlp):
    """`MoELayerProfile` of a `SparseMoE` block from its arguments `moe` (all
    of them, defaults filled in), for `tokens` tokens per example of width
    `dim` and experts of hidden width `mlp`."""
    experts = int(moe["num_experts"])
    group = int(moe["group_size"] or tokens)
    per_expert_kernels = dim * mlp * (2 if moe["gated"] else 1) + mlp * dim
    per_expert = per_expert_kernels + ((mlp + dim) if moe["use_bias"] else 0)
    # The router (no weights) answers its own capacity and cost questions.
    options = {key: value for key, value in moe.items() if key in router_option_names()}
    router = make_router(moe["router"], experts, int(moe["top_k"]), moe["capacity_factor"],
                         moe["eval_capacity_factor"], **options)
    capacity_train, capacity_eval = router.capacity(True, group), router.capacity(False, group)
    params_router = router.num_parameters(dim)
    router_flops = router.flops(tokens, dim)
    groups_per_example = tokens / group

    def expert_flops(training):
        rows = router.expert_rows(1, group, training) * groups_per_example
        return 2 * rows * per_expert_kernels

    per_token = router.experts_per_token(group, training=False)
    flops = router_flops + expert_flops(False)
    flops_train = router_flops + expert_flops(True)
    return MoELayerProfile(
        name=name,
        router=moe["router"],
        num_experts=experts,
        top_k=router.top_k,
        group_size=group,
        capacity_train=capacity_train,
        capacity_eval=capacity_eval,
        experts_per_token=per_token,
        params=params_router + experts * per_expert,
        params_router=params_router,
        params_per_expert=per_expert,
        params_active=int(round(params_router + per_token * per_expert)),
        flops=int(round(flops)),
        flops_train=int(round(flops_train)),
    )


def assemble_profile(name, input_shape, params, non_trainable, dense_flops, moe_profiles):
    """The `ModelProfile` of a model with `params` trainable parameters (the
    MoE layers' included), `dense_flops` FLOPs outside the MoE layers and the
    MoE layers' `moe_profiles`."""
    flops = dense_flops + sum(m.flops for m in moe_profiles)
    flops_train = dense_flops + sum(m.flops_train for m in moe_profiles)
    active = params - sum(m.params - m.params_active for m in moe_profiles)
    return ModelProfile(
        name=name,
        input_shape=input_shape,
        params_total=int(params),
        params_non_trainable=int(non_trainable),
        params_active=int(active),
        flops=int(round(flops)),
        flops_train=int(round(flops_train)),
        moe_layers=moe_profiles,
        uncounted_layers=[],
    )


def check_config_keys(cls, config):
    """Raise a `ValueError` naming the unknown arguments if `config` has keys
    that `cls`'s constructor does not take."""
    allowed = set(init_defaults(cls)) | set(
        name for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"
    ) | {"name", "trainable", "dtype"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(
            f"Argument `config` has unknown {cls.__name__} arguments {unknown}; allowed: "
            f"{sorted(allowed - {'kwargs'})}."
        )
