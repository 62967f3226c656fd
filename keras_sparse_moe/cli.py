"""The `keras-sparse-moe` command line.

Commands: `presets`, `profile`, `train`, `evaluate`, `export`, `demo` (run
`keras-sparse-moe COMMAND --help`). `--backend` (or `KERAS_BACKEND`)
chooses tensorflow, jax or torch; it must be set before Keras is imported,
so this module imports nothing heavy: `main` parses the arguments first
(`--help` and a bad argument answer without importing Keras or TensorFlow),
then imports the package's API and runs the command, whose own heavy imports
happen inside the command functions. A bad argument or bad input prints one
clear line (no traceback) and exits with status 2.
"""

import argparse
import logging
import os
import sys
import warnings

from keras_sparse_moe._cli_backend import CLI_BACKENDS

# `keras_sparse_moe.recipes.augment.AUGMENTATIONS` (importing it would import
# Keras before the arguments are parsed; tests/test_cli.py checks they agree).
AUGMENTATIONS = ("none", "shift", "affine", "elastic")

BACKENDS = CLI_BACKENDS
QUANTIZATION_CHOICES = ("none", "float16", "dynamic_int8", "int8")
EXIT_USAGE = 2


class CLIError(Exception):
    """A user error reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line (and a pointer to
    `--help`) instead of the usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _console(stderr=False):
    from rich.console import Console

    return Console(stderr=stderr)


def _table(title, columns, rows, no_wrap=(), min_width=None):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in no_wrap,
                         min_width=(min_width or {}).get(column))
    for row in rows:
        # Text, not markup: "[litert]" in a pip hint or a path must print as it is.
        table.add_row(*[Text(str(c)) for c in row])
    _console().print(table)


def _count(n):
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _setup_logging(quiet):
    """Show the package's progress messages (data preparation, training,
    export) on stderr; returns a function undoing the set-up."""
    from rich.logging import RichHandler

    logger = logging.getLogger("keras_sparse_moe")
    absl = logging.getLogger("absl")
    saved = (logger.level, absl.level)
    handler = RichHandler(console=_console(stderr=True), show_path=False, show_time=False,
                          markup=False)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # Not also through the root logger: a library may give it a handler
    # (LiteRT's converter does), which would print every message twice.
    propagate = logger.propagate
    logger.propagate = False
    # TensorFlow's converter logs deprecation notes through absl at WARNING.
    absl.setLevel(logging.ERROR)

    def restore():
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = propagate
        absl.setLevel(saved[1])

    return restore


def _overrides(pairs):
    """`--set KEY=VALUE` pairs as a dict (`parse_key_values`), errors as one line."""
    from keras_sparse_moe.utils.key_values import parse_key_values

    try:
        return parse_key_values(pairs)
    except ValueError as error:
        raise CLIError(str(error)) from None


def _data_options(args):
    options = {}
    if getattr(args, "data_dir", None):
        options["data_dir"] = args.data_dir
    if getattr(args, "no_download", False):
        options["download"] = False
    return options


def _resolved_data(args, image_text=False):
    """The command's --data resolved once (None without --data): the source
    stands for the spec in every later use, so folders are scanned, TFDS is
    prepared and the summary is shown once."""
    if not args.data:
        return None
    from keras_sparse_moe.data import resolve_dataset

    return resolve_dataset(args.data, image_text=image_text, **_data_options(args))


# --------------------------------------------------------------------- presets
def cmd_presets(args):
    from keras_sparse_moe.presets import list_presets

    rows = []
    for p in list_presets(family=args.family):
        description = p.get("description", "")
        if args.width and len(description) > args.width > 3:
            description = description[: args.width - 3].rstrip() + "..."
        rows.append((
            p["name"],
            p["family"],
            _count(p.get("params_total")),
            _count(p.get("params_active")),
            "yes" if p.get("has_weights") else "no",
            p.get("input") or "",
            description,
        ))
    columns = ["name", "family", "params", "active/token", "weights", "input", "description"]
    if _console().width < 110 and not args.width:
        # Too narrow for descriptions and families: keep names and figures whole.
        keep = (0, 2, 3, 4)
        columns, rows = [columns[i] for i in keep], [tuple(row[i] for i in keep) for row in rows]
    longest = max((len(row[0]) for row in rows), default=4)
    _table("keras-sparse-moe presets", columns, rows, no_wrap=columns[:5], min_width={"name": longest})
    return 0


# --------------------------------------------------------------------- profile
def cmd_profile(args):
    from keras_sparse_moe.profile import profile
    from keras_sparse_moe.utils.io import check_writable_file

    if args.json:
        check_writable_file(args.json)  # before building a possibly large model
    report = _profile_without_building(args.preset)
    if report is None:
        report = profile(_load_model(args.preset, load_weights=False))
    _console().print(str(report), markup=False, highlight=False)
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


def _profile_without_building(name):
    """The profile of a registered architecture preset (a backbone without
    weights, e.g. the paper-sized V-MoE / Soft MoE ones), computed from its
    configuration (`profile_config`: equal to profiling the built model, without
    allocating billions of parameters); None for anything else."""
    from keras_sparse_moe.profile import profile_config

    spec = _registered_preset(name)
    if spec is None or spec.has_weights or spec.task_cls is not None or spec.backbone_cls is None:
        return None
    return profile_config(spec.backbone_cls, {**spec.backbone_config, "name": spec.name})


def _registered_preset(name):
    """The `PresetSpec` registered as `name`, or None for a path, a hub handle or
    an unknown name (loading it then reports what is wrong)."""
    from keras_sparse_moe.presets import get_preset

    name = os.fspath(name)
    if os.path.exists(name) or "://" in name:
        return None
    try:
        return get_preset(name)
    except ValueError:
        return None


# ---------------------------------------------------------------------- export
def _not_run_row():
    from keras_sparse_moe.export import LITERT_INSTALL_HINT

    return ("LiteRT check", "not run: the LiteRT interpreter (ai_edge_litert) is not installed; "
            + LITERT_INSTALL_HINT)


def _export_batch_size(text):
    if text.strip().lower() in ("dynamic", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 or 'dynamic'; received {text!r}")
    return value


def _shape_arg(text):
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise CLIError(f"--input-image-shape must be H,W or H,W,C of ints >= 1; received {text!r}")
    return shape


def cmd_export(args):
    from keras_sparse_moe.export import LiteRTModel
    from keras_sparse_moe.export import export_litert
    from keras_sparse_moe.export import litert_interpreter_available
    from keras_sparse_moe.recipes.classifier import match_converter_to_data

    quantization = None if args.quantization == "none" else args.quantization
    if quantization == "int8" and not args.data:
        raise CLIError(
            "--quantization int8 needs representative data: add --data digits (or another "
            "dataset spec) to calibrate on training images"
        )
    from keras_sparse_moe.export.litert import check_quantization

    try:  # before loading anything: int8 also needs the LiteRT interpreter
        check_quantization(quantization, args.data)
    except ValueError as error:
        raise CLIError(str(error)) from None
    model = _load_model(args.model)
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive

    if isinstance(model, MoEDualEncoderContrastive):
        return _export_towers(args, model, quantization)
    _check_output_file(args.output)
    representative = None
    include = not args.no_preprocessing
    raw_shape = _shape_arg(args.input_image_shape) if args.input_image_shape else None
    data = _resolved_data(args)  # once, for calibration and the accuracy check
    if data is not None:
        info = data.info
        if include and raw_shape is None and None not in tuple(info.image_shape or (None,)):
            raw_shape = tuple(int(d) for d in info.image_shape)  # the data's native size
        classes = getattr(model, "num_classes", None)
        if classes is not None and info.num_classes and classes != info.num_classes:
            raise CLIError(
                f"{args.model} predicts {classes} classes but dataset {args.data!r} has "
                f"{info.num_classes}: --data must be the data the model was trained on (it "
                "calibrates int8 and measures the exported file's accuracy)"
            )
        match_converter_to_data(model, info.max_value)
    from keras_sparse_moe.export.litert import raw_input_spec

    try:
        raw = raw_input_spec(model, include, raw_shape, args.input_dtype)
    except ValueError as error:
        raise CLIError(str(error)) from None
    if quantization == "int8":
        from keras_sparse_moe.recipes.classifier import representative_images

        representative = representative_images(
            model, data, args.calibration_samples, raw_shape=raw["shape"] if raw else None)
    path = export_litert(model, args.output, quantization=quantization,
                         representative_data=representative, batch_size=args.batch_size,
                         include_preprocessing=include,
                         input_image_shape=raw["shape"] if raw else None,
                         input_dtype=args.input_dtype)
    rows = [
        ("file", path),
        ("size", f"{os.path.getsize(path) / 1024:.0f} KB"),
        ("quantization", args.quantization),
    ]
    can_run = litert_interpreter_available()
    if can_run:
        runner = LiteRTModel(path)
        rows += [
            ("input", runner.describe_input()),
            ("builtin op types", len(runner.ops)),
        ]
    else:
        rows.append(_not_run_row())
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if raw is not None:
        rows.append(("input preprocessing", f"in the .tflite: {raw['preprocessing']} (raw "
                     f"{raw['dtype']} images {'x'.join(str(d) for d in raw['shape'])})"))
    elif converter is not None:
        rows.append(("input preprocessing", f"raw * {converter.scale} + {converter.offset or 0}"
                     " (the model's image converter; not in the .tflite: --no-preprocessing)"))
    if args.data and can_run:
        from keras_sparse_moe.recipes.classifier import litert_test_accuracy

        accuracy, n = litert_test_accuracy(model, path, data)
        rows.append(("LiteRT test accuracy", f"{accuracy:.4f} ({n} images of {args.data})"))
    _table("LiteRT export", ["what", "value"], rows)
    return 0


def _export_towers(args, model, quantization):
    """`export` of a dual encoder: both towers into the directory --output."""
    from keras_sparse_moe.export import LiteRTModel
    from keras_sparse_moe.export import litert_interpreter_available
    from keras_sparse_moe.export.towers import evaluate_towers
    from keras_sparse_moe.export.towers import export_dual_encoder

    if args.output.endswith(".tflite"):
        raise CLIError(
            f"{args.model} is a dual encoder: --output must be a directory for its two towers "
            f"(image_encoder.tflite, text_encoder.tflite), not {args.output!r}"
        )
    images = None
    data = _resolved_data(args, image_text=True)  # once, for calibration, prompts and accuracy
    include = not args.no_preprocessing
    raw_shape = _shape_arg(args.input_image_shape) if args.input_image_shape else None
    if quantization == "int8":
        from keras_sparse_moe.export.litert import raw_input_spec
        from keras_sparse_moe.recipes.dual_encoder import representative_tower_images

        try:
            raw = raw_input_spec(model, include, raw_shape, args.input_dtype)
        except ValueError as error:
            raise CLIError(str(error)) from None
        images = representative_tower_images(model, data, args.calibration_samples,
                                              raw_shape=raw["shape"] if raw else None)
    paths = export_dual_encoder(model, args.output, quantization=quantization,
                                representative_images=images, data=data,
                                batch_size=args.batch_size, overwrite=args.overwrite,
                                include_preprocessing=include, input_image_shape=raw_shape,
                                input_dtype=args.input_dtype)
    rows = []
    can_run = litert_interpreter_available()
    for key in ("image_encoder", "text_encoder"):
        size = f"{os.path.getsize(paths[key]) / 1024:.0f} KB"
        if not can_run:
            rows.append((key, f"{paths[key]} ({size})"))
            continue
        runner = LiteRTModel(paths[key])
        inputs = ", ".join(
            f"{name} {d['dtype'].__name__} {tuple(int(v) for v in d['shape'])}"
            for name, d in zip(runner.input_names, runner.inputs)
        )
        rows.append((key, f"{paths[key]} ({size}; {inputs})"))
    rows.append(("quantization", args.quantization))
    for key in ("class_embeddings", "vocabulary", "manifest"):
        if key in paths:
            rows.append((key, paths[key]))
    if not can_run:
        rows.append(_not_run_row())
    elif args.data:
        result = evaluate_towers(args.output, data)
        rows.append(("LiteRT zero-shot test accuracy",
                     f"{result['zero_shot_accuracy']:.4f} ({result['num_examples']} images of "
                     f"{args.data}, text prompts only)"))
    _table("LiteRT export (dual encoder towers)", ["what", "value"], rows)
    return 0


def _check_output_file(path):
    from keras_sparse_moe.utils.io import check_writable_file

    if not path.endswith(".tflite"):
        raise CLIError(f"--output must be a .tflite file name; received {path!r}")
    check_writable_file(path)  # before converting


# ------------------------------------------------------------ train / evaluate
# Classifier-only `train` options and their defaults: a dual encoder rejects
# them when they are changed.
_CLASSIFIER_ONLY = {
    "label_smoothing": ("--label-smoothing", 0.1),
    "set": ("--set", None),
    "extra_train_data": ("--extra-train-data", None),
}


def _is_dual_encoder(name_or_path):
    """Whether a preset name, preset directory or `.keras` file holds a dual
    encoder (an unreadable one is left to the command's own checks)."""
    from keras_sparse_moe.recipes.trainer import is_dual_encoder

    try:
        return is_dual_encoder(name_or_path)
    except (ValueError, OSError):
        return False


def _train_dual_encoder(args):
    from keras_sparse_moe.recipes import run_state
    from keras_sparse_moe.recipes import train

    changed = [flag for key, (flag, default) in _CLASSIFIER_ONLY.items()
               if getattr(args, key, default) != default]
    if changed:
        raise CLIError(
            f"{', '.join(changed)}: only for image classifiers; {args.preset} is a dual "
            "encoder (contrastive training: the other options of `train` apply; --augment "
            "other than none shifts the images at random)"
        )
    metrics = train(args.preset, args.data, _training_config(args), args.output,
                    overwrite=args.overwrite, plots=not args.no_plots,
                    data_options=_data_options(args), verbose=0 if args.quiet else args.verbose,
                    run_eagerly=args.run_eagerly)
    artifacts = [run_state.MODEL_FILE, run_state.PRESET_DIR + "/", run_state.METRICS_FILE,
                 run_state.LOG_FILE]
    artifacts += [os.path.basename(path) for path in metrics.get("figures", [])]
    _print_dual_metrics(f"train: {args.preset} on {args.data} (zero-shot, test split)", metrics)
    _console().print(f"artifacts in {args.output}: " + ", ".join(artifacts), markup=False)
    return 0


def _training_config(args):
    """The `TrainingConfig` of the `train` command's flags."""
    from keras_sparse_moe.recipes.config import TrainingConfig

    return TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
        ema_momentum=args.ema_momentum, label_smoothing=args.label_smoothing,
        augment=args.augment, validation_fraction=args.validation_fraction,
        early_stopping_patience=args.early_stopping, seed=args.seed,
        max_batches=args.max_batches, deterministic=args.deterministic,
    )


def _print_dual_metrics(title, metrics):
    if metrics.get("zero_shot_accuracy") is None:
        rows = [("zero-shot accuracy", "not measured: the data has no class labels")]
    else:
        rows = [("zero-shot accuracy", f"{metrics['zero_shot_accuracy']:.4f} "
                 f"({metrics['num_examples']} images, text prompts only, "
                 f"{metrics['num_templates']} templates per class)")]
    if "macro_f1" in metrics:
        rows.append(("macro-F1", f"{metrics['macro_f1']:.4f}"))
    for key, label in (("latency_ms_per_image", "latency (ms / image, image tower)"),
                       ("initial_loss", "contrastive loss, start"),
                       ("final_loss", "contrastive loss, end"),
                       ("train_seconds", "training time (s)"), ("parameters", "parameters"),
                       ("backend", "backend")):
        if key in metrics:
            value = metrics[key]
            rows.append((label, f"{value:.4g}" if isinstance(value, float) else str(value)))
    _table(title, ["metric", "value"], rows)


def _evaluate_dual_encoder(args):
    from keras_sparse_moe.recipes.dual_encoder import evaluate_zero_shot
    from keras_sparse_moe.utils.io import check_writable_directory

    if args.output:
        check_writable_directory(args.output)  # before evaluating

    metrics = evaluate_zero_shot(args.model, data=args.data, split=args.split,
                                 batch_size=args.batch_size, data_options=_data_options(args))
    _print_dual_metrics(f"evaluate: {args.model} on {args.data} ({args.split} split, zero-shot)",
                        metrics)
    _table("per class", ["class", "precision", "recall", "f1", "support"], [
        (c["name"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"])
        for c in metrics["per_class"]
    ])
    if args.output:
        _write_json(os.path.join(args.output, "metrics.json"), metrics)
        _console().print(f"wrote {os.path.join(args.output, 'metrics.json')}", markup=False)
    return 0


def cmd_train(args):
    from keras_sparse_moe.recipes import train

    if _is_dual_encoder(args.preset):
        return _train_dual_encoder(args)
    result = train(
        args.preset, args.data, _training_config(args), args.output,
        verbose=0 if args.quiet else args.verbose,
        overrides=_overrides(args.set),
        data_options={**_data_options(args), **(
            {"extra_train_data": list(args.extra_train_data)} if args.extra_train_data else {})},
        overwrite=args.overwrite,
        plots=not args.no_plots,
        run_eagerly=args.run_eagerly,
    )
    _print_metrics(f"train: {args.preset} on {args.data} ({result.get('split', 'test')} split)", result)
    _console().print(f"artifacts in {args.output}: " + ", ".join(
        os.path.basename(p) for p in result.get("artifacts", {}).values()), markup=False)
    return 0


def cmd_evaluate(args):
    from keras_sparse_moe.recipes.classifier import evaluate_classifier

    _warn_if_untrained(args.model)
    if _is_dual_encoder(args.model):
        return _evaluate_dual_encoder(args)
    metrics = evaluate_classifier(
        args.model,
        data=args.data,
        split=args.split,
        batch_size=args.batch_size,
        output_dir=args.output,
        data_options=_data_options(args),
        max_batches=args.max_batches,
    )
    _print_metrics(f"evaluate: {args.model} on {args.data} ({args.split} split)", metrics)
    if metrics.get("per_class"):
        _table(
            "per class",
            ["class", "precision", "recall", "f1", "support"],
            [
                (c["name"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
                 c["support"])
                for c in metrics["per_class"]
            ],
        )
    if args.output:
        _console().print(f"wrote {os.path.join(args.output, 'metrics.json')}", markup=False)
    return 0


def cmd_demo(args):
    from keras_sparse_moe.recipes.demo import run_demo

    result = run_demo(output_dir=args.output, epochs=args.epochs, seed=args.seed,
                      quick=args.quick, deterministic=args.deterministic,
                      verbose=0 if args.quiet else 2, from_scratch=args.from_scratch)
    _table("keras-sparse-moe demo", ["what", "value"], result["rows"])
    return 0


# --------------------------------------------------------------------- helpers
def _load_model(name_or_path, load_weights=True):
    from keras_sparse_moe.presets import from_preset

    name = os.fspath(name_or_path)
    if name.endswith(".keras"):
        import keras_sparse_moe  # noqa: F401 - registers the serializable classes

        from keras_sparse_moe.utils.io import load_keras_file

        if not os.path.isfile(name):
            raise CLIError(f"no model file at {name!r}")
        return load_keras_file(name)
    if os.path.sep in name and not os.path.exists(name) and "://" not in name:
        raise CLIError(f"no preset directory or model file at {name!r}")
    return from_preset(name, load_weights=load_weights)


def _warn_if_untrained(name):
    """Warn when `name` is a registered preset that ships no trained weights:
    its figures are those of random weights."""
    spec = _registered_preset(name)
    if spec is not None and not spec.has_weights:
        logging.getLogger("keras_sparse_moe.cli").warning(
            "Preset %s ships no trained weights: the model has random weights, so its accuracy "
            "means nothing. Train it first (keras-sparse-moe train --preset %s ...) or use a "
            "preset with weights (keras-sparse-moe presets: the 'weights' column).", name, name)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings on the command line: one line, without the source line."""
    print(f"keras-sparse-moe: warning: {message}", file=sys.stderr)


def _write_json(path, obj):
    from keras_sparse_moe.utils.io import write_json

    write_json(path, obj)


_SHOWN_METRICS = (
    "accuracy", "macro_f1", "macro_precision", "macro_recall", "examples",
    "latency_ms_per_image", "latency_ms_single_image", "params_total", "params_active",
    "backend", "epochs_run", "resumed_from_epoch", "train_time_s", "wall_time_s",
)


def _print_metrics(title, metrics):
    rows = []
    for key in _SHOWN_METRICS:
        value = metrics.get(key)
        if value is None:
            continue
        rows.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    for name, stats in (metrics.get("routing") or {}).items():
        rows.append((f"{name} load imbalance / dropped",
                     f"{stats['load_imbalance']:.2f} / {stats['dropped_fraction']:.3f}"))
    _table(title, ["metric", "value"], rows)


_DETERMINISTIC_HELP = (
    "deterministic kernels: the same command and seed repeat bit for bit on the same machine "
    "(TensorFlow's multi-threaded CPU kernels otherwise vary from run to run)"
)


def build_parser():
    """The argument parser of `keras-sparse-moe`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    data_common = argparse.ArgumentParser(add_help=False)
    data_common.add_argument("--data-dir", default=None,
                             help="TFDS data directory (for tfds:NAME datasets)")
    data_common.add_argument("--no-download", action="store_true",
                             help="TFDS: use only prepared data, never download")

    parser = _Parser(
        prog="keras-sparse-moe",
        description="Sparse mixture-of-experts models for Keras 3: presets, training, "
        "evaluation, profiling and LiteRT export. Datasets: 'digits' (embedded, offline), "
        "'tfds:NAME', 'folder:PATH'.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("presets", parents=[common], help="table of the registered presets",
                       description="List the registered presets: family, parameters "
                       "(total and active per token) and whether trained weights ship.")
    p.add_argument("--family", default=None, help="only this model family (e.g. moe_vit)")
    p.add_argument("--width", type=int, default=0,
                   help="cut descriptions to this many characters (default: fit the terminal)")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("profile", parents=[common],
                       help="parameters, active parameters and FLOPs of a preset",
                       description="Parameters (total / active per token) and FLOPs per "
                       "example of a preset, preset directory or .keras file.")
    p.add_argument("--preset", required=True, help="preset name, preset directory or .keras file")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "train", parents=[common, data_common],
        help="train a classifier or dual-encoder preset on a dataset",
        description="Train an image classifier from a preset and evaluate it on the test "
        "split. Writes OUTPUT/model.keras, OUTPUT/preset/, metrics.json, log.csv, "
        "training_curves.png and routing_heatmap.png. Re-running the same command "
        "resumes an interrupted run after its last finished epoch. A dual-encoder preset "
        "(limoe_*) is trained contrastively on image-caption pairs (digits: captions made "
        "from the class names) and evaluated by zero-shot accuracy from text prompts.",
    )
    p.add_argument("--preset", default="moe_vit_tiny",
                   help="preset name, preset directory or .keras file (default: moe_vit_tiny)")
    p.add_argument("--data", default="digits", help="digits | tfds:NAME | folder:PATH | optdigits-train (default: digits)")
    p.add_argument("--output", default="runs/train", help="output directory (default: runs/train)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--warmup-fraction", type=float, default=0.1,
                   help="share of the steps with linear warmup (then cosine decay)")
    p.add_argument("--ema-momentum", type=float, default=None, metavar="M",
                   help="end with an exponential moving average of the weights (e.g. 0.999 "
                   "for runs of thousands of steps)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="affine",
                   help="training augmentation (default: affine = rotation, zoom, shift; "
                   "elastic = affine + smooth elastic distortion)")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the training split held out for validation")
    p.add_argument("--extra-train-data", nargs="+", default=None, metavar="DATA",
                   help="datasets whose training data joins the --data train split (e.g. "
                   "optdigits-train beside digits: same classes and image format); validation "
                   "and test stay those of --data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help=_DETERMINISTIC_HELP)
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without validation improvement")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="preset override, e.g. --set dropout=0.1 --set stochastic_depth=0.1")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a previous run in the output directory")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG figures")
    p.add_argument("--verbose", type=int, choices=(1, 2), default=1,
                   help="1: progress bars, 2: one line per epoch")
    p.add_argument("--quiet", action="store_true", help="only warnings and the final table")
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-eagerly", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", parents=[common, data_common],
        help="accuracy, macro-F1, per-class table and latency",
        description="Evaluate a classifier (.keras file, preset directory or preset name, "
        "e.g. moe_vit_tiny_digits) on a split of a dataset. A dual encoder (e.g. "
        "limoe_tiny_digits) is evaluated by zero-shot classification from text prompts.",
    )
    p.add_argument("--model", required=True, help=".keras file, preset directory or preset name")
    p.add_argument("--data", default="digits", help="digits | tfds:NAME | folder:PATH | optdigits-train (default: digits)")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--output", default=None,
                   help="directory for metrics.json and routing_heatmap.png")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export", parents=[common, data_common],
        help="export a model to LiteRT (.tflite), builtin ops only",
        description="Export a classifier to a LiteRT .tflite file (builtin ops only). The "
        "file takes raw images (uint8 by default, in the preset's value range, of the native "
        "size of --data or of the preset): the model's resize and scaling are in the graph "
        "(--no-preprocessing: preprocessed images). With --data, report its test-split "
        "accuracy on raw images; int8 "
        "calibrates on training images of --data. A dual encoder (limoe_*) exports its image "
        "and text towers into the directory --output; with --data it also writes the class "
        "text embeddings and reports the LiteRT zero-shot test accuracy.",
    )
    p.add_argument("--model", required=True, help=".keras file, preset directory or preset name")
    p.add_argument("--output", required=True,
                   help="output .tflite file; for a dual encoder, a directory for both towers")
    p.add_argument("--overwrite", action="store_true",
                   help="dual encoders: replace a non-empty output directory")
    p.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default="none")
    p.add_argument("--data", default=None,
                   help="dataset for int8 calibration and the LiteRT accuracy check, e.g. digits")
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--batch-size", type=_export_batch_size, default=1,
                   help="fixed batch size of the .tflite (default 1), or 'dynamic' (any batch, "
                   "resized at run time)")
    p.add_argument("--no-preprocessing", action="store_true",
                   help="leave the resize and scaling out: the file takes preprocessed images")
    p.add_argument("--input-image-shape", default=None,
                   help="raw image size H,W or H,W,C (default: the native size of --data, "
                   "else the preset's, e.g. 8,8,1 for the digits presets)")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8",
                   help="dtype of the raw images (default uint8)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "demo", parents=[common],
        help="fine-tune, evaluate and export moe_vit_tiny on the embedded digits",
        description="The README's main job: fine-tune moe_vit_tiny (pretrained on synthetic "
        "digits: the preset moe_vit_tiny_synthetic_digits) on the embedded digits together with "
        "optdigits-train (real digits of other writers), evaluate it "
        "on the test split, export LiteRT float32 and dynamic-int8 files, check them with the "
        "LiteRT interpreter and print a summary (under 3 minutes on 2 cores).",
    )
    p.add_argument("--output", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's epoch budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help=_DETERMINISTIC_HELP)
    p.add_argument("--from-scratch", action="store_true",
                   help="train moe_vit_tiny from random weights on the digits alone instead of "
                   "fine-tuning the pretrained preset (test accuracy varies more between runs)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)

    _add_convert_parser(sub, common)
    return parser


def _add_convert_parser(sub, common):
    p = sub.add_parser(
        "convert", parents=[common], help="convert a vmoe checkpoint to a preset directory",
        description="Convert a google-research/vmoe V-MoE or Soft MoE checkpoint (vmoe's sharded "
        "PREFIX.index + PREFIX.data-*-of-* or a flax msgpack params file) to a keras-hub "
        "preset directory holding an MoEViTImageClassifier (see docs/convert.md).",
    )
    p.add_argument("source", choices=["vmoe"], help="checkpoint format (vmoe)")
    p.add_argument("checkpoint", help="checkpoint prefix, .index, data shard, .msgpack or "
                   "their directory")
    p.add_argument("--output", required=True, help="preset directory to write")
    p.add_argument("--preset", default=None,
                   help="registered preset the checkpoint must match (e.g. "
                   "vmoe_s32_ilsvrc2012); without a vmoe config its routing is used")
    p.add_argument("--config", default=None,
                   help="vmoe model config JSON (default: config.json beside the checkpoint)")
    p.add_argument("--image-size", type=int, default=None,
                   help="image side in pixels; needed for checkpoints without a learned "
                   "position table (sincos2d position embeddings)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args):
    """`keras-sparse-moe convert vmoe CHECKPOINT --output DIR`."""
    from keras_sparse_moe.convert import convert_vmoe

    model = convert_vmoe(args.checkpoint, args.output, preset=args.preset, config=args.config,
                         image_size=args.image_size)
    if not args.quiet:
        print(f"wrote {os.path.abspath(args.output)} ({model.count_params():,} parameters)")
    return 0


def _check_numbers(args):
    for name in ("epochs", "batch_size", "calibration_samples", "max_batches", "width"):
        value = getattr(args, name, None)
        minimum = 0 if name == "width" else 1
        if value is not None and value < minimum:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {minimum}; received {value}")


_REEXEC_FLAG = "KERAS_SPARSE_MOE_CLI_REEXEC"


def _imported_backend():
    """The backend of the already imported Keras, or None."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.backend.backend()
    except AttributeError:  # a partially imported module
        return os.environ.get("KERAS_BACKEND", "tensorflow")


def _import_api():
    """Import the package's API (Keras, the serializable classes) once the
    arguments are parsed; the command-line process first imports TensorFlow
    without its C++ start-up log lines."""
    import keras_sparse_moe
    from keras_sparse_moe import _quiet_tensorflow

    if _quiet_tensorflow.is_cli_process():
        _quiet_tensorflow.import_tensorflow_quietly()
        keras_sparse_moe._import_api()


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.version:
        from keras_sparse_moe import __version__

        print(f"keras-sparse-moe {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    backend = getattr(args, "backend", None)
    if backend:
        current = _imported_backend()
        if current is not None and current != backend:
            if argv is None and not os.environ.get(_REEXEC_FLAG):
                # `import keras_sparse_moe` already imported Keras with another
                # backend: start again with KERAS_BACKEND set.
                env = dict(os.environ, KERAS_BACKEND=backend, **{_REEXEC_FLAG: "1"})
                command = [sys.executable, "-m", "keras_sparse_moe.cli", *sys.argv[1:]]
                os.execve(sys.executable, command, env)
            print(f"keras-sparse-moe: error: --backend {backend} must be chosen before Keras "
                  f"is imported (this process already uses {current}); set "
                  f"KERAS_BACKEND={backend} instead", file=sys.stderr)
            return EXIT_USAGE
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        _check_numbers(args)  # an argument error answers before Keras is imported
    except CLIError as error:
        print(f"keras-sparse-moe {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _import_api()
    from keras_sparse_moe.utils.jax_cache import enable_jax_compilation_cache

    enable_jax_compilation_cache()  # JAX: a repeated command loads its compiled programs
    restore_logging = _setup_logging(getattr(args, "quiet", False))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # restored when the block ends
            warnings.filterwarnings("ignore", message=r".*shuffle=True.*")
            return args.func(args) or 0
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
            RuntimeError) as error:
        message = str(error).strip().splitlines() or [type(error).__name__]
        print(f"keras-sparse-moe {args.command}: error: {message[0]}", file=sys.stderr)
        for line in message[1:6]:
            if line.strip():
                print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
