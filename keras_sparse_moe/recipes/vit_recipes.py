"""Command-line driver of the `recipes/moe_vit.py` and `recipes/dense_vit.py`
scripts: one recipe (`DIGITS_RECIPE` unless overridden), several seeds, a
summary of the test metrics, and optionally the trained preset directory.
With `--cv-folds N` it cross-validates the recipe on the digits training
split instead (`keras_sparse_moe.recipes.cross_validation`) and never evaluates on
the test split. With `--pretrain DATA` the preset is first trained on DATA
(e.g. `synthetic-digits` or `optdigits-train`) once, in `OUTPUT/pretrain`,
and every run starts from those weights (the recipe of
`moe_vit_tiny_digits`, docs/results.md).

The Keras backend is chosen with the `KERAS_BACKEND` environment variable
(default tensorflow).
"""

import argparse
import json
import logging
import os
import sys

from keras_sparse_moe.recipes.augment import AUGMENTATIONS
from keras_sparse_moe.recipes.classifier import DIGITS_RECIPE
from keras_sparse_moe.recipes.distillation import DEFAULT_DISTILLATION_WEIGHT
from keras_sparse_moe.recipes.distillation import DEFAULT_TEMPERATURE


SOUP_DIR = "soup"
"""Sub-directory of `--output` that holds the `--soup` model."""

PRETRAIN_EPOCHS = 10
"""Epochs of `--pretrain` (10 on `synthetic-digits`: 500,000 images seen)."""


def _parser(dense):
    name = "dense_vit" if dense else "moe_vit"
    parser = argparse.ArgumentParser(
        prog=f"recipes/{name}.py",
        description=(
            "Dense ViT baseline with the same active FLOPs per token as the MoE preset"
            if dense else "MoE-ViT (V-MoE) image classifier"
        ) + ": train with the digits recipe over several seeds and report the test metrics.",
    )
    parser.add_argument("--preset", default="moe_vit_tiny",
                        help="MoE-ViT preset (the dense model is derived from it)")
    parser.add_argument("--data", default="digits", help="digits | tfds:NAME | folder:PATH | synthetic-digits[:N] | optdigits-train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=DIGITS_RECIPE["epochs"])
    parser.add_argument("--batch-size", type=int, default=DIGITS_RECIPE["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DIGITS_RECIPE["learning_rate"])
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=DIGITS_RECIPE["augment"],
                        help="training augmentation (default %(default)s; 'elastic' adds smooth "
                        "elastic distortions to the affine one)")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help="preset override (repeatable), e.g. --set dropout_rate=0.1 "
                        "--set stochastic_depth=0.1")
    parser.add_argument("--validation-fraction", type=float,
                        default=DIGITS_RECIPE["validation_fraction"],
                        help="share of the training split held out for validation (0: train on "
                        "all of it)")
    parser.add_argument("--cv-folds", type=int, default=None, metavar="N",
                        help="digits only: cross-validate instead (N contiguous folds of the "
                        "training split, one run per fold and seed); reports the pooled "
                        "held-out accuracy and never evaluates on the test split")
    parser.add_argument("--compare-cv", default=None, metavar="CV_SUMMARY_JSON",
                        help="with --cv-folds: cv_summary.json of another recipe to compare with, "
                        "image by image (McNemar test)")
    parser.add_argument("--output", default=f"runs/{name}", help="parent directory of the runs")
    parser.add_argument("--save-preset", default=None, metavar="DIR",
                        help="also save, as a preset directory, the model of the seed with the "
                        "best validation accuracy (the test split plays no part)")
    parser.add_argument("--soup", action="store_true",
                        help="also average the weights of the seeds' models into one model (a "
                        "uniform model soup: fine-tune several seeds from the same pretrained "
                        "weights, e.g. --preset moe_vit_tiny_synthetic_digits --seeds 0 1 2 3); "
                        "it is evaluated like a seed, in OUTPUT/soup, and is what --save-preset "
                        "saves; with --cv-folds it is cross-validated fold by fold")
    parser.add_argument("--pretrain", default=None, metavar="DATA",
                        help="first train the preset on DATA (e.g. synthetic-digits or optdigits-train) for "
                        "--pretrain-epochs with the recipe's settings (learning rate "
                        f"{DIGITS_RECIPE['learning_rate']:g}), once, in OUTPUT/pretrain; every run "
                        "then starts from those weights (fine-tune with e.g. --learning-rate 5e-4)")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS, metavar="N")
    parser.add_argument("--extra-train-data", nargs="+", default=None, metavar="DATA",
                        help="datasets whose training data joins the --data train split while "
                        "fine-tuning (e.g. optdigits-train beside digits; same classes and image "
                        "format); validation, test and cross-validation folds stay those of --data")
    parser.add_argument("--teachers", nargs="+", default=None, metavar="MODEL",
                        help="trained classifiers (.keras files or preset directories, e.g. "
                        "runs/moe_vit/seed_0/model.keras): distil their ensemble into each seed's "
                        "model (label loss + weight * T^2 * KL)")
    parser.add_argument("--distillation-temperature", type=float, default=DEFAULT_TEMPERATURE,
                        metavar="T")
    parser.add_argument("--distillation-weight", type=float,
                        default=DEFAULT_DISTILLATION_WEIGHT, metavar="W")
    parser.add_argument("--compare", default=None, metavar="SUMMARY_JSON",
                        help="summary.json of another recipe run to print beside this one")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    # Smoke runs (tests): at most this many batches of each split per epoch.
    parser.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def _row(summary):
    runs = summary["runs"]
    accuracies = ", ".join(f"{r['accuracy']:.4f}" for r in runs)
    return (
        summary["label"],
        f"{runs[0]['params_total']:,} / {runs[0]['params_active']:,}",
        f"{(runs[0]['flops_per_example'] or 0) / 1e6:.2f}",
        f"{summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f}",
        f"{summary['macro_f1_mean']:.4f}",
        accuracies,
    )


def _cv_row(name, seed, summary, comparison=None):
    """A row of the cross-validation table (with the McNemar comparison when
    one is given)."""
    row = [name, seed, f"{summary['accuracy']:.4f} ({summary['correct']}/{summary['examples']})",
           ", ".join(f"{a:.3f}" for a in summary["fold_accuracies"])]
    if comparison is not None:
        c = comparison
        row.append(f"{c['only_a']} / {c['only_b']}, p = {c['p_value']:.3f}")
    return row


def _cross_validate(parser, args, preset, recipe, overrides, label):
    from rich.console import Console
    from rich.table import Table

    from keras_sparse_moe.recipes.cross_validation import cross_validate_classifier
    from keras_sparse_moe.recipes.cross_validation import paired_comparison

    recipe = {k: v for k, v in recipe.items() if k != "validation_fraction"}
    table = Table(title=f"{args.data} training split, {args.cv_folds}-fold cross-validation, "
                  f"{args.epochs} epochs (no model is evaluated on the test split)")
    columns = ["model", "seed", "held-out accuracy (pooled)", "per fold"]
    if args.compare_cv:
        try:
            with open(args.compare_cv, encoding="utf-8") as handle:
                other = json.load(handle)
            missing = [key for key in ("label", "labels", "predictions") if key not in other]
            if missing:
                raise ValueError(f"no {missing}")
        except (OSError, ValueError, TypeError) as error:
            parser.error(f"--compare-cv {args.compare_cv!r} is not a readable "
                         f"cv_summary.json ({error})")
        columns += [f"vs {other['label']} (right only here / only there, McNemar p)"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for seed in args.seeds:
        try:
            summary = cross_validate_classifier(
                preset, os.path.join(args.output, f"cv{args.cv_folds}_seed_{seed}"),
                folds=args.cv_folds, data=args.data, seed=seed, label=label, overrides=overrides,
                verbose=args.verbose, **recipe,
            )
            c = paired_comparison(summary, other) if args.compare_cv else None
        except ValueError as error:
            parser.error(str(error))
        table.add_row(*_cv_row(label, str(seed), summary, c))
    if args.soup:
        from keras_sparse_moe.recipes.soup import cross_validate_soup

        runs = [os.path.join(args.output, f"cv{args.cv_folds}_seed_{seed}") for seed in args.seeds]
        try:
            soup = cross_validate_soup(runs, os.path.join(args.output, f"cv{args.cv_folds}_soup"),
                                       label=f"{label} soup of {len(runs)}")
        except ValueError as error:
            parser.error(str(error))
        name = (f"{label}, weights averaged over the seeds (ingredients "
                f"{soup['ingredient_accuracy_mean']:.4f} on average; predictions averaged "
                f"{soup['ensemble_accuracy']:.4f})")
        c = paired_comparison(soup, other) if args.compare_cv else None
        table.add_row(*_cv_row(name, "soup", soup, c))
    Console().print(table)
    return 0


def _pretrain(parser, args, overrides):
    """Train the preset on `args.pretrain` once (resumed or reused on a
    re-run, as every run); returns the preset directory of the result."""
    from keras_sparse_moe.data import parse_spec
    from keras_sparse_moe.recipes.classifier import train_classifier
    from keras_sparse_moe.recipes.run_state import PRESET_DIR

    try:
        kind, _ = parse_spec(args.pretrain)
    except ValueError as error:
        parser.error(f"--pretrain: {error}")
    if kind == "digits":
        parser.error("--pretrain digits would train on the digits before fine-tuning on them "
                     "(and, with --cv-folds, on the held-out folds): pretrain on other data, "
                     "e.g. --pretrain synthetic-digits")
    output_dir = os.path.join(args.output, "pretrain")
    recipe = dict(DIGITS_RECIPE, epochs=args.pretrain_epochs, batch_size=args.batch_size,
                  augment=args.augment)
    try:
        train_classifier(args.preset, args.pretrain, output_dir, overrides=overrides, seed=0,
                         max_batches=args.max_batches, plots=False, verbose=args.verbose, **recipe)
    except ValueError as error:
        parser.error(f"--pretrain: {error}")
    return os.path.join(output_dir, PRESET_DIR)


def _soup(parser, args, summary):
    """Average the seeds' models into `OUTPUT/soup` (model file, preset
    directory, test metrics with the ingredients' model files); returns the
    metrics."""
    from keras_sparse_moe.presets import save_to_preset
    from keras_sparse_moe.recipes.classifier import evaluate_classifier
    from keras_sparse_moe.recipes.run_state import METRICS_FILE
    from keras_sparse_moe.recipes.run_state import MODEL_FILE
    from keras_sparse_moe.recipes.run_state import PRESET_DIR
    from keras_sparse_moe.recipes.run_state import json_default
    from keras_sparse_moe.recipes.run_state import write_json
    from keras_sparse_moe.recipes.soup import uniform_soup
    from keras_sparse_moe.utils.io import atomic_save_model

    directory = os.path.join(args.output, SOUP_DIR)
    files = [os.path.join(args.output, f"seed_{run['seed']}", MODEL_FILE) for run in summary["runs"]]
    try:
        soup = uniform_soup(files)
    except ValueError as error:
        parser.error(f"--soup: {error}")
    os.makedirs(directory, exist_ok=True)
    atomic_save_model(soup, os.path.join(directory, MODEL_FILE))
    save_to_preset(soup, os.path.join(directory, PRESET_DIR))
    metrics = evaluate_classifier(soup, args.data, max_batches=args.max_batches,
                                  single_image_latency=False)
    metrics["ingredients"] = files
    write_json(os.path.join(directory, METRICS_FILE), metrics, default=json_default)
    logging.getLogger("keras_sparse_moe.recipes").info(
        "soup of %d seeds: test accuracy %.4f", len(files), metrics["accuracy"])
    return metrics


def main(argv=None, dense=False):
    """Run the recipe; returns the exit status."""
    parser = _parser(dense)
    args = parser.parse_args(argv)
    if args.cv_folds is not None and (args.save_preset or args.compare):
        parser.error("--cv-folds trains on folds of the training split: it cannot be "
                     "combined with --save-preset or --compare (test-split summaries)")
    if args.compare_cv and args.cv_folds is None:
        parser.error("--compare-cv needs --cv-folds")
    if args.pretrain_epochs < 1:
        parser.error(f"--pretrain-epochs must be >= 1; received {args.pretrain_epochs}")
    if args.extra_train_data:  # before any pretraining
        from keras_sparse_moe.data.sources import check_extra_train_data

        try:
            check_extra_train_data(args.data, args.extra_train_data)
        except ValueError as error:
            parser.error(f"--extra-train-data: {error}")
    if args.soup and (len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds)):
        parser.error(f"--soup averages the models of several different seeds; received --seeds "
                     f"{' '.join(map(str, args.seeds))}: give at least two, e.g. --seeds 0 1 2 3")
    if args.save_preset and args.validation_fraction == 0 and len(args.seeds) > 1 and not args.soup:
        parser.error("--save-preset with --validation-fraction 0 has no validation split "
                     "to choose a seed by: give one seed")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from rich.console import Console
    from rich.table import Table

    from keras_sparse_moe.presets import save_to_preset
    from keras_sparse_moe.recipes.classifier import load_classifier
    from keras_sparse_moe.recipes.comparison import best_by_validation
    from keras_sparse_moe.recipes.comparison import dense_equivalent_overrides
    from keras_sparse_moe.recipes.comparison import train_seeds
    from keras_sparse_moe.recipes.run_state import PRESET_DIR
    from keras_sparse_moe.utils.key_values import parse_key_values

    recipe = dict(DIGITS_RECIPE, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, validation_fraction=args.validation_fraction,
                  max_batches=args.max_batches, augment=args.augment)
    try:
        overrides = parse_key_values(args.set) or None
    except ValueError as error:
        parser.error(str(error))
    label = args.preset
    if args.teachers:
        recipe.update(teachers=args.teachers,
                      distillation_temperature=args.distillation_temperature,
                      distillation_weight=args.distillation_weight)
        label = f"{args.preset} distilled from {len(args.teachers)} teacher(s)"
    if dense:
        overrides = dense_equivalent_overrides(args.preset, overrides)
        label = f"dense ViT ({args.preset}, mlp_dim={overrides['mlp_dim']}, no MoE)"
    if args.augment != DIGITS_RECIPE["augment"]:
        label += f" augment={args.augment}"
    if args.set:
        label += " " + " ".join(args.set)
    preset = args.preset
    if args.pretrain:
        preset = _pretrain(parser, args, overrides)
        label += f" pretrained on {args.pretrain} ({args.pretrain_epochs} epochs)"
    if args.extra_train_data:
        recipe["data_options"] = {"extra_train_data": list(args.extra_train_data)}
        label += f" trained with {' + '.join(args.extra_train_data)}"
    if args.cv_folds is not None:
        return _cross_validate(parser, args, preset, recipe, overrides, label)
    try:
        summary = train_seeds(preset, args.data, args.output, seeds=args.seeds,
                              overrides=overrides, label=label, verbose=args.verbose, **recipe)
    except ValueError as error:
        parser.error(str(error))
    soup = _soup(parser, args, summary) if args.soup else None
    if args.save_preset:
        if soup is not None:
            run = SOUP_DIR
            what = f"the soup of {len(args.seeds)} seeds (test accuracy {soup['accuracy']:.4f})"
        else:
            if args.validation_fraction > 0:
                best = best_by_validation(summary)
                how = f"validation accuracy {best['val_accuracy']:.4f}, "
            else:
                best, how = summary["runs"][0], "trained on the whole training split, "
            run = f"seed_{best['seed']}"
            what = f"the seed-{best['seed']} model ({how}test accuracy {best['accuracy']:.4f})"
        path = save_to_preset(load_classifier(os.path.join(args.output, run, PRESET_DIR)),
                              args.save_preset)
        print(f"saved {what} as {path}")
    rows = [_row(summary)]
    if args.compare:
        with open(args.compare, encoding="utf-8") as handle:
            rows.append(_row(json.load(handle)))
    table = Table(title=f"{args.data} test split, {len(args.seeds)} seed(s), {args.epochs} epochs")
    for column in ("model", "params / active", "MFLOPs/example", "accuracy (mean ± std)",
                   "macro-F1", "per seed"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    if soup is not None:
        table.add_row(f"{label}, weights of the {len(args.seeds)} seeds averaged (soup)", rows[0][1],
                      rows[0][2], f"{soup['accuracy']:.4f}", f"{soup['macro_f1']:.4f}", "")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
