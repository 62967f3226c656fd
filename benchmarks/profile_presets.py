"""Print the profile of every registered preset as a Markdown table.

Usage: python benchmarks/profile_presets.py [--family moe_vit]

Numbers come from `keras_sparse_moe.profile.profile_config`: analytic for
`MoEViTBackbone` configs (no weights allocated; equal to `profile(model)`
on the built model), otherwise by building the backbone with random
weights and profiling it (about a minute for a B/16-sized one on 2 CPU
cores). Columns: trainable parameters, parameters active per token,
forward GFLOPs per example at the inference capacity (1 multiply-add = 2
FLOPs; conventions in `keras_sparse_moe/profile.py`) and the MoE layers.
"""

import argparse
import re

from keras_sparse_moe import presets
from keras_sparse_moe.profile import profile_config


def _millions(count):
    return f"{count / 1e6:,.2f}M"


def _moe_summary(moe_layers):
    if not moe_layers:
        return "0"
    blocks = []
    for layer in moe_layers:
        match = re.search(r"encoder_block_(\d+)", layer.name)
        blocks.append(match.group(1) if match else layer.name)
    kinds = sorted(
        {(m.router, m.num_experts, m.top_k, m.capacity_train, m.capacity_eval)
         for m in moe_layers}
    )
    details = []
    for router, experts, top_k, train, evaluation in kinds:
        k = "" if router == "soft" else f", k={top_k}"
        details.append(f"{router}, E={experts}{k}, C={train}/{evaluation}")
    return f"{len(moe_layers)} (blocks {', '.join(blocks)}): {'; '.join(details)}"


def preset_table(family=None):
    """The Markdown table of the registered presets (of `family`), as a string."""
    lines = [
        "| preset | params (total) | params active / token | GFLOPs / example "
        "| MoE layers (router, experts, top-k, capacity per group train/eval) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in presets.list_presets(family=family, params=False):
        spec = presets.get_preset(row["name"])
        if spec.backbone_cls is None:
            # A shipped-weights preset (e.g. moe_vit_tiny_digits): same
            # architecture as the preset it was trained from.
            continue
        result = profile_config(spec.backbone_cls, spec.backbone_config)
        lines.append(
            f"| `{row['name']}` | {_millions(result.params_total)} "
            f"| {_millions(result.params_active)} | {result.flops / 1e9:.4g} "
            f"| {_moe_summary(result.moe_layers)} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default=None, help="only this preset family")
    args = parser.parse_args(argv)
    print(preset_table(args.family))


if __name__ == "__main__":
    main()
