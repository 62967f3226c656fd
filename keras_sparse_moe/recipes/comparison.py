"""MoE versus dense at equal active compute, over several seeds.

- `dense_equivalent_overrides`: preset overrides turning a MoE-ViT into a
  dense ViT with the same active MLP FLOPs per token: every block gets a
  dense MLP whose width is the mean, over blocks, of the hidden units a
  token uses (`mlp_dim` in a dense block, `top_k * mlp_dim` in a top-k
  token-choice MoE block). Attention, embeddings and head are unchanged, so
  the two models have the same FLOPs per example up to the (tiny) router.
- `train_seeds`: the same recipe for several seeds, with the mean and
  standard deviation of the test metrics.
"""

import json
import logging
import os

import numpy as np

from keras_sparse_moe.layers.router_registry import make_router
from keras_sparse_moe.utils.io import atomic_write_text

logger = logging.getLogger("keras_sparse_moe.recipes")


def _backbone_config(preset):
    from keras_sparse_moe.presets import get_preset

    spec = get_preset(preset)
    if spec.backbone_config is None:
        raise ValueError(f"Preset {preset!r} has no backbone configuration to derive a dense model from.")
    return dict(spec.backbone_config)


def dense_equivalent_overrides(preset="moe_vit_tiny", overrides=None):
    """Overrides building the dense counterpart of a MoE-ViT preset.

    Args:
        preset: a registered MoE-ViT preset name.
        overrides: overrides applied to the MoE model too (they change the
            configuration the dense width is computed from).

    Returns:
        `overrides` plus `{"moe_layers": "none", "mlp_dim": width}`.

    Example:
    >>> dense_equivalent_overrides("moe_vit_tiny")["mlp_dim"]  # (2*128 + 2*2*128) / 4
    192
    """
    from keras_sparse_moe.models.moe_vit.moe_layer_schedule import resolve_moe_layers

    config = {**_backbone_config(preset), **dict(overrides or {})}
    num_layers = int(config.get("num_layers", 12))
    mlp_dim = int(config.get("mlp_dim", 3072))
    router = config.get("router", "token_choice")
    if router != "token_choice":
        raise ValueError(
            f"A dense equivalent is defined for token-choice routing only; preset {preset!r} "
            f"uses router={router!r}."
        )
    experts_per_token = make_router(
        router, int(config.get("num_experts", 8)), int(config.get("top_k", 2)), None, None
    ).experts_per_token()
    moe = resolve_moe_layers(config.get("moe_layers", "every_2"), num_layers)
    hidden = mlp_dim * (num_layers - len(moe)) + experts_per_token * mlp_dim * len(moe)
    width = int(round(hidden / num_layers))
    return {**dict(overrides or {}), "moe_layers": "none", "mlp_dim": width}


def _mean_std(values):
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(values):
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def train_seeds(preset, data, output_dir, seeds=(0, 1, 2), overrides=None, label=None, **recipe):
    """Train the same recipe once per seed (each in `output_dir/seed_S`) and
    summarise the test metrics.

    Args:
        preset: preset name (see `train_classifier`).
        data: dataset spec.
        output_dir: parent directory of the runs; `summary.json` is written
            there.
        seeds: iterable of ints.
        overrides: preset overrides (e.g. from `dense_equivalent_overrides`).
        label: name of the model in the summary (default: `preset`).
        **recipe: other `train_classifier` arguments (epochs, batch_size,
            learning_rate, ...).

    Returns:
        A dict: `label`, `runs` (per seed: seed, accuracy, macro_f1,
        val_accuracy and val_loss of the last epoch, params_total,
        params_active, flops_per_example, train_time_s),
        `accuracy_mean`, `accuracy_std`, `macro_f1_mean`, `macro_f1_std`.

    Example:
    >>> # train_seeds("moe_vit_tiny", "digits", "runs/moe", seeds=(0, 1), epochs=100)
    """
    from keras_sparse_moe.recipes.classifier import train_classifier

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Argument `seeds` must hold at least one seed.")
    runs = []
    for seed in seeds:
        metrics = train_classifier(
            preset, data, os.path.join(output_dir, f"seed_{seed}"), seed=seed,
            overrides=overrides, **recipe,
        )
        runs.append({
            "seed": seed,
            "accuracy": metrics.get("accuracy"),
            "macro_f1": metrics.get("macro_f1"),
            "val_accuracy": (metrics.get("history") or {}).get("val_accuracy"),
            "val_loss": (metrics.get("history") or {}).get("val_loss"),
            "params_total": metrics.get("params_total"),
            "params_active": metrics.get("params_active"),
            "flops_per_example": metrics.get("flops_per_example"),
            "train_time_s": metrics.get("train_time_s"),
            "backend": metrics.get("backend"),
        })
        logger.info("%s seed %d: test accuracy %.4f", label or preset, seed, runs[-1]["accuracy"])
    accuracy_mean, accuracy_std = _mean_std(r["accuracy"] for r in runs)
    f1_mean, f1_std = _mean_std(r["macro_f1"] for r in runs)
    summary = {
        "label": label or preset,
        "preset": preset,
        "data": data,
        "overrides": dict(overrides or {}),
        "recipe": recipe,
        "runs": runs,
        "accuracy_mean": accuracy_mean,
        "accuracy_std": accuracy_std,
        "macro_f1_mean": f1_mean,
        "macro_f1_std": f1_std,
    }
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, "summary.json"),
                      json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def best_by_validation(summary):
    """The run of `summary` with the highest validation accuracy (ties: lower
    validation loss, then lower seed). The test split plays no part.

    Example:
    >>> best_by_validation({"runs": [{"seed": 0, "val_accuracy": 0.9, "val_loss": 0.5},
    ...                              {"seed": 1, "val_accuracy": 0.95, "val_loss": 0.6}]})["seed"]
    1
    """
    runs = [r for r in summary["runs"] if r.get("val_accuracy") is not None]
    if not runs:
        raise ValueError("No run has a validation accuracy (was validation_fraction 0?).")
    return min(runs, key=lambda r: (-r["val_accuracy"], r.get("val_loss") or 0.0, r["seed"]))
