"""Recipe: a V-MoE vision transformer classifier (`moe_vit_tiny` on the
embedded digits by default), trained with the digits recipe
(`TrainingConfig.digits()`: AdamW with warmup + cosine decay, label
smoothing, weight decay, gradient clipping, random rotation / zoom / shift)
once per seed, evaluated on the fixed test split; prints the mean and spread
of the test metrics and writes them to `OUTPUT/summary.json`.

This recipe trained the shipped `moe_vit_tiny_digits` preset (from the
shipped synthetic-digits pretraining, together with UCI's optdigits-train):

    python recipes/moe_vit.py --preset moe_vit_tiny_synthetic_digits --extra-train-data optdigits-train \\
        --epochs 30 --learning-rate 5e-4 --validation-fraction 0 --output runs/digits_final \\
        --save-preset keras_sparse_moe/presets_data/moe_vit_tiny_digits

MoE versus its dense counterpart (`recipes/dense_vit.py`, same active FLOPs):

    python recipes/moe_vit.py --seeds 0 1 2 --output runs/moe_vit
    python recipes/dense_vit.py --seeds 0 1 2 --output runs/dense_vit

Backend: `KERAS_BACKEND=tensorflow|jax|torch` (default tensorflow). Re-running
a command resumes interrupted runs; `python recipes/moe_vit.py --help` lists
the options.
"""

import argparse
import json
import logging
import os
import sys

import numpy as np


def parser(prog="recipes/moe_vit.py", description="MoE-ViT (V-MoE) image classifier"):
    """The options of the recipe: the preset, the data, the seeds and the
    fields of `TrainingConfig.digits()` that runs commonly change."""
    from keras_sparse_moe.recipes.augment import AUGMENTATIONS
    from keras_sparse_moe.recipes.config import TrainingConfig

    recipe = TrainingConfig.digits()
    p = argparse.ArgumentParser(prog=prog, description=description + ": train with the digits "
                                "recipe over several seeds and report the test metrics.")
    p.add_argument("--preset", default="moe_vit_tiny")
    p.add_argument("--data", default="digits", help="digits | tfds:NAME | folder:PATH | optdigits-train")
    p.add_argument("--extra-train-data", nargs="+", default=None, metavar="DATA",
                   help="datasets whose training data joins the --data train split (e.g. "
                   "optdigits-train beside digits)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=recipe.epochs)
    p.add_argument("--batch-size", type=int, default=recipe.batch_size)
    p.add_argument("--learning-rate", type=float, default=recipe.learning_rate)
    p.add_argument("--augment", choices=AUGMENTATIONS, default=recipe.augment)
    p.add_argument("--validation-fraction", type=float, default=recipe.validation_fraction,
                   help="share of the training split held out for validation (0: train on all of it)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="preset override (repeatable), e.g. --set dropout_rate=0.1")
    p.add_argument("--output", default="runs/moe_vit", help="parent directory of the runs")
    p.add_argument("--save-preset", default=None, metavar="DIR",
                   help="also save the model of the first seed as a preset directory")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    return p


def run(args, overrides):
    """Train once per seed with `train`; returns the summary."""
    import keras_sparse_moe as ksm

    runs = []
    for seed in args.seeds:
        config = ksm.TrainingConfig.digits(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            augment=args.augment, validation_fraction=args.validation_fraction, seed=seed,
            max_batches=args.max_batches,
        )
        data_options = {"extra_train_data": args.extra_train_data} if args.extra_train_data else None
        metrics = ksm.train(args.preset, args.data, config, os.path.join(args.output, f"seed_{seed}"),
                            overrides=overrides, data_options=data_options, verbose=args.verbose)
        runs.append({key: metrics.get(key) for key in (
            "accuracy", "macro_f1", "params_total", "params_active", "flops_per_example")})
    accuracies = np.array([r["accuracy"] for r in runs])
    summary = {
        "preset": args.preset, "data": args.data, "overrides": overrides, "seeds": args.seeds,
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else 0.0,
        "runs": runs,
    }
    from keras_sparse_moe.utils.io import write_json

    write_json(os.path.join(args.output, "summary.json"), summary)
    if args.save_preset:
        from keras_sparse_moe.presets import save_to_preset
        from keras_sparse_moe.recipes.classifier import load_classifier

        model = load_classifier(os.path.join(args.output, f"seed_{args.seeds[0]}", "model.keras"))
        print(f"saved preset directory {save_to_preset(model, args.save_preset)}")
    return summary


def main(argv=None):
    from keras_sparse_moe.utils.key_values import parse_key_values

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = parse_key_values(args.set) if args.set else {}
    summary = run(args, overrides)
    print(json.dumps({k: summary[k] for k in ("preset", "accuracy_mean", "accuracy_std")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
