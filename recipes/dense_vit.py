"""Recipe: the dense ViT baseline of a MoE-ViT preset, with the same active
FLOPs per token: no MoE layer, every MLP as wide as the mean hidden width a
token uses in the MoE model (192 for `moe_vit_tiny`: 128-wide MLPs, and top-2
of 8 128-wide experts in every other block), trained with the same recipe
and options as `recipes/moe_vit.py`.

    python recipes/dense_vit.py --seeds 0 1 2 --output runs/dense_vit

Backend: `KERAS_BACKEND=tensorflow|jax|torch` (default tensorflow).
"""

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import moe_vit  # noqa: E402


def dense_equivalent_overrides(preset="moe_vit_tiny", overrides=None):
    """`overrides` plus `{"moe_layers": "none", "mlp_dim": width}`: the dense
    model with the mean hidden width per token of the MoE preset."""
    from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
    from keras_sparse_moe.presets import get_preset

    config = {**dict(get_preset(preset).backbone_config or {}), **dict(overrides or {})}
    if config.get("router", "token_choice") != "token_choice":
        raise ValueError(f"A dense equivalent is defined for token-choice routing only ({preset!r}).")
    num_layers = int(config.get("num_layers", 12))
    mlp_dim = int(config.get("mlp_dim", 3072))
    moe = resolve_moe_layers(config.get("moe_layers", "every_2"), num_layers)
    hidden = mlp_dim * (num_layers - len(moe)) + int(config.get("top_k", 2)) * mlp_dim * len(moe)
    return {**dict(overrides or {}), "moe_layers": "none", "mlp_dim": int(round(hidden / num_layers))}


def main(argv=None):
    from keras_sparse_moe.utils.key_values import parse_key_values

    args = moe_vit.parser("recipes/dense_vit.py", "Dense ViT baseline of a MoE-ViT preset").parse_args(argv)
    if args.output == "runs/moe_vit":
        args.output = "runs/dense_vit"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = dense_equivalent_overrides(args.preset, parse_key_values(args.set) if args.set else {})
    summary = moe_vit.run(args, overrides)
    print(json.dumps({k: summary[k] for k in ("preset", "overrides", "accuracy_mean", "accuracy_std")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
