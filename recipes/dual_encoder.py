"""Recipe: a LIMoE-style image-text MoE dual encoder (`limoe_tiny` on the
embedded digits by default) trained contrastively on image-caption pairs
(digits: captions made from the class names with several templates; images
and captions of the same class in a batch are all positives), then evaluated
by zero-shot classification of the test split from text prompts only.

This recipe trained the shipped `limoe_tiny_digits` preset (on JAX):

    KERAS_BACKEND=jax python recipes/dual_encoder.py --epochs 30 --seed 0 \\
        --output runs/limoe_digits --save-preset keras_sparse_moe/presets_data/limoe_tiny_digits

The same run from the command line: `keras-sparse-moe train --preset limoe_tiny
--data digits --epochs 30 --output runs/limoe_digits`. Re-running a command
resumes an interrupted run; `python recipes/dual_encoder.py --help` lists the
options. Backend: `KERAS_BACKEND=tensorflow|jax|torch`.
"""

import argparse
import logging
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="recipes/dual_encoder.py",
        description="Contrastive training of a MoE dual encoder and zero-shot evaluation.",
    )
    parser.add_argument("--preset", default="limoe_tiny", help="dual-encoder preset (limoe_*)")
    parser.add_argument("--data", default="digits", help="digits | folder:PATH | tfds:NAME")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/limoe_digits")
    parser.add_argument("--save-preset", default=None, metavar="DIR",
                        help="also save the trained model as a preset directory")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from rich.console import Console
    from rich.table import Table

    from keras_sparse_moe.presets import save_to_preset
    from keras_sparse_moe.recipes import TrainingConfig
    from keras_sparse_moe.recipes import train
    from keras_sparse_moe.recipes.dual_encoder import load_dual_encoder

    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                            seed=args.seed)
    metrics = train(args.preset, args.data, config, args.output, verbose=args.verbose)
    if args.save_preset:
        import os

        path = save_to_preset(load_dual_encoder(os.path.join(args.output, "preset")),
                              args.save_preset)
        print(f"saved preset directory {path}")
    table = Table(title=f"{args.preset} on {args.data}: zero-shot {metrics['split']} split")
    table.add_column("metric")
    table.add_column("value")
    table.add_row("zero-shot accuracy", f"{metrics['zero_shot_accuracy']:.4f} "
                  f"({metrics['num_examples']} images)")
    table.add_row("macro-F1", f"{metrics['macro_f1']:.4f}")
    table.add_row("contrastive loss", f"{metrics['initial_loss']:.3f} -> {metrics['final_loss']:.3f}")
    table.add_row("training time", f"{metrics['train_seconds']:.0f} s ({metrics['backend']})")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
