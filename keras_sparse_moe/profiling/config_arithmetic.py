"""Analytic parameter and FLOP arithmetic of transformer encoders with
sparse MoE blocks, from constructor arguments alone (no weight is
allocated): the pieces the model families assemble into the
`ModelProfile` of a config (conventions in `keras_sparse_moe.profile`)."""

import inspect
import numbers

from keras_sparse_moe.layers.routing_ops import compute_capacity
from keras_sparse_moe.layers.sparse_moe import dropless_path_is_ragged
from keras_sparse_moe.profiling.results import ModelProfile
from keras_sparse_moe.profiling.results import MoELayerProfile
from keras_sparse_moe.profiling.results import moe_experts_per_token


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
    router = moe["router"]
    per_expert_kernels = dim * mlp * (2 if moe["gated"] else 1) + mlp * dim
    per_expert = per_expert_kernels + ((mlp + dim) if moe["use_bias"] else 0)
    if router == "soft":
        slots = int(moe["slots_per_expert"])
        capacity_train = capacity_eval = slots
        params_router = dim * experts * slots + 1
        router_flops = 2 * tokens * dim * experts * slots
        mixing_flops = 2 * 2 * tokens * experts * slots * dim
        top_k = 1
    else:
        top_k = int(moe["top_k"])
        train_factor = moe["capacity_factor"]
        eval_factor = moe["eval_capacity_factor"]
        if eval_factor is None:
            eval_factor = train_factor
        capacity_train = compute_capacity(group, experts, top_k, train_factor)
        capacity_eval = compute_capacity(group, experts, top_k, eval_factor)
        params_router = dim * experts
        router_flops = 2 * tokens * dim * experts
        mixing_flops = 0
    groups_per_example = tokens / group

    def expert_flops(capacity, training):
        if dropless_path_is_ragged(
            router, moe["capacity_factor"], moe["eval_capacity_factor"],
            moe["dropless_impl"], training,
        ):
            # Expert-sorted rows: each token's top_k assignments only.
            return 2 * tokens * top_k * per_expert_kernels
        return 2 * groups_per_example * experts * capacity * per_expert_kernels

    per_token = moe_experts_per_token(router, experts, top_k, group, capacity_eval)
    flops = router_flops + mixing_flops + expert_flops(capacity_eval, False)
    flops_train = router_flops + mixing_flops + expert_flops(capacity_train, True)
    return MoELayerProfile(
        name=name,
        router=router,
        num_experts=experts,
        top_k=top_k,
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
