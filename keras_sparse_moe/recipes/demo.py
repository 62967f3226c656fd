"""The README's main job: `keras-sparse-moe demo`.

Fine-tunes the `moe_vit_tiny` sparse MoE vision transformer, pretrained on
synthetic digits (the shipped preset `moe_vit_tiny_synthetic_digits`: load a
pretrained preset, then `fit`, the keras-hub way), on the embedded
scikit-learn digits (train split) together with `optdigits-train` (3,823
UCI digits by 30 other writers, shipped: the recipe of `moe_vit_tiny_digits`
at the demo's budget), evaluates it on the fixed test split
(the last 20%, samples 1438..1796, never trained on), exports it to LiteRT
(float32 and dynamic-range int8, builtin ops only), runs both `.tflite` files
with the `ai_edge_litert` interpreter on the same test split (where it is not
installed, the files are written and the table says they were not run), and
returns a summary table. Budget: under 3 minutes on 2 CPU cores with the TensorFlow
backend. `from_scratch=True` (`keras-sparse-moe demo --from-scratch`)
trains `moe_vit_tiny` from random weights on the digits alone instead (at
the default learning rate of `TrainingConfig`, for `DEMO_SCRATCH_EPOCHS` epochs).

Artifacts in `output_dir`: `train/` (everything `train` writes:
model, preset, metrics, curves, routing heatmap), `moe_vit_tiny_float32.tflite`,
`moe_vit_tiny_dynamic_int8.tflite` and `summary.json`.
"""

import logging
import os
import time

import numpy as np

logger = logging.getLogger("keras_sparse_moe.recipes")

DEMO_MODEL = "moe_vit_tiny"
"""The demo's architecture (and the prefix of its `.tflite` files)."""
DEMO_PRESET = "moe_vit_tiny_synthetic_digits"
"""Where the demo starts: `moe_vit_tiny` pretrained on synthetic digits."""
DEMO_LEARNING_RATE = 5e-4
"""Fine-tuning learning rate (the shipped `moe_vit_tiny_digits` recipe's)."""
DEMO_EXTRA_TRAIN_DATA = "optdigits-train"
"""Real digits of other writers that join the digits' train split when fine-tuning."""
DEMO_EPOCHS = 10
"""Epoch budget of the fine-tuning demo: 10 x 80 steps over the digits and
`DEMO_EXTRA_TRAIN_DATA` (fits the 3-minute budget on 2 CPU cores)."""
DEMO_SCRATCH_EPOCHS = 40
"""Epoch budget of `from_scratch=True` (the digits alone: 40 x 20 steps)."""
DEMO_QUANTIZATIONS = ("float32", "dynamic_int8")
# `quick=True` with `from_scratch=True`: a smoke run of every step for tests
# (tiny model, few batches); without `from_scratch` the pretrained model is kept.
QUICK_OVERRIDES = {"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2}


def litert_accuracy(path, images, labels):
    """Accuracy and mean latency per image (ms) of a `.tflite` classifier.

    Args:
        path: the `.tflite` file.
        images: inputs of the file (N, ...): raw images for a file exported
            with its preprocessing (the default for classifiers), else
            preprocessed model inputs.
        labels: int array (N,).

    Example:
    >>> # litert_accuracy("model.tflite", x_test, y_test) -> (0.97, 0.21)
    """
    from keras_sparse_moe.export import LiteRTModel

    runner = LiteRTModel(path)
    start = time.perf_counter()
    logits = runner(images)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))
    return accuracy, seconds / max(len(images), 1) * 1e3


def _epochs(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _size(path):
    return f"{os.path.getsize(path) / 1024:.0f} KB"


def run_demo(output_dir="runs/demo", epochs=None, seed=0, quick=False, deterministic=False,
             verbose=1, from_scratch=False):
    """Fine-tune, evaluate and export `moe_vit_tiny` on the embedded digits.

    Args:
        output_dir: directory for the artifacts (a previous demo there is
            replaced).
        epochs: None (the demo budget: `DEMO_EPOCHS`, or
            `DEMO_SCRATCH_EPOCHS` with `from_scratch`) or int >= 1.
        seed: int >= 0.
        quick: smoke-test mode: 1 epoch of 2 batches, float32 export only.
            Every step runs. The pretrained model keeps most of its accuracy
            (it reads about 81% of the test digits before any fine-tuning);
            with `from_scratch` the model is a 2-block width-16 one and its
            accuracy is low.
        deterministic: deterministic kernels (process-wide): the same
            command repeats bit for bit on the same machine.
        verbose: 0 (quiet), 1 (progress bars) or 2 (one line per epoch).
        from_scratch: bool. False (default): fine-tune the pretrained
            `DEMO_PRESET` at `DEMO_LEARNING_RATE` on the digits and
            `DEMO_EXTRA_TRAIN_DATA`. True: train `moe_vit_tiny` from random
            weights on the digits alone at the default learning rate of `TrainingConfig`
            (its test accuracy varies more from run to run: see
            docs/results.md).

    Returns:
        A dict: `rows` (list of `(what, value)` pairs for the summary table)
        and `summary` (the numbers, also written to `summary.json`).

    Example:
    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), quick=True, verbose=0)
    >>> result["summary"]["litert"]["float32"]["accuracy"] > 0.5   # pretrained
    True
    """
    from keras_sparse_moe.data import load_digits
    from keras_sparse_moe.export import LITERT_INSTALL_HINT
    from keras_sparse_moe.export import export_litert
    from keras_sparse_moe.export import litert_interpreter_available
    from keras_sparse_moe.recipes.config import TrainingConfig
    from keras_sparse_moe.recipes.trainer import train
    from keras_sparse_moe.utils.io import write_json
    from keras_sparse_moe.utils.io import check_writable_directory
    from keras_sparse_moe.utils.validation import check_int

    import keras

    start = time.time()
    if not isinstance(from_scratch, bool):
        raise ValueError(f"Argument `from_scratch` must be a bool; received {from_scratch!r}.")
    if epochs is None:
        epochs = 1 if quick else (DEMO_SCRATCH_EPOCHS if from_scratch else DEMO_EPOCHS)
    epochs = check_int("epochs", epochs, minimum=1)
    check_writable_directory(output_dir)
    train_dir = os.path.join(output_dir, "train")
    preset = DEMO_MODEL if from_scratch else DEMO_PRESET
    learning_rate = TrainingConfig.learning_rate if from_scratch else DEMO_LEARNING_RATE
    extra_train_data = None if from_scratch else DEMO_EXTRA_TRAIN_DATA
    logger.info(
        "Demo: %s %s on the embedded digits%s for %d epochs, then LiteRT export.",
        "training" if from_scratch else "fine-tuning", preset,
        f" and {extra_train_data}" if extra_train_data else "", epochs,
    )
    config = TrainingConfig(epochs=epochs, learning_rate=learning_rate, seed=seed,
                            deterministic=deterministic, max_batches=2 if quick else None)
    metrics, model = train(
        preset,
        "digits",
        config,
        train_dir,
        overwrite=True,
        single_image_latency=False,
        overrides=QUICK_OVERRIDES if quick and from_scratch else None,
        data_options={"extra_train_data": extra_train_data} if extra_train_data else None,
        # Few steps: skip graph tracing (JAX dispatches eager ops slowly, so jit there).
        run_eagerly=bool(quick) and keras.backend.backend() != "jax",
        verbose=verbose,
        return_model=True,
    )
    # The .tflite files include the preprocessing: they take the raw digits.
    images, labels = load_digits("test")
    litert = {}
    quantizations = DEMO_QUANTIZATIONS[:1] if quick else DEMO_QUANTIZATIONS
    can_run = litert_interpreter_available()
    if not can_run:
        logger.warning("The LiteRT interpreter (ai_edge_litert) is not installed: the demo exports "
                       "the .tflite files but cannot run them (%s).", LITERT_INSTALL_HINT)
    for quantization in quantizations:
        path = os.path.join(output_dir, f"{DEMO_MODEL}_{quantization}.tflite")
        logger.info("Exporting LiteRT (%s) to %s ...", quantization, path)
        export_litert(model, path, quantization=None if quantization == "float32" else quantization)
        accuracy, latency = litert_accuracy(path, images, labels) if can_run else (None, None)
        litert[quantization] = {
            "path": path,
            "bytes": os.path.getsize(path),
            "accuracy": accuracy,
            "latency_ms_per_image": latency,
        }
    wall = time.time() - start
    summary = {
        "preset": preset,
        "pretrained": not from_scratch,
        "extra_train_data": extra_train_data,
        "learning_rate": learning_rate,
        "backend": metrics["backend"],
        "epochs": metrics["epochs_run"],
        "params_total": metrics["params_total"],
        "params_active": metrics["params_active"],
        "test_examples": metrics["examples"],
        "keras_accuracy": metrics["accuracy"],
        "keras_macro_f1": metrics["macro_f1"],
        "keras_latency_ms_per_image": metrics["latency_ms_per_image"],
        "litert": litert,
        "train_time_s": metrics["train_time_s"],
        "wall_time_s": wall,
        "deterministic": deterministic,
        "quick": bool(quick),
        "output_dir": output_dir,
    }
    write_json(os.path.join(output_dir, "summary.json"), summary)
    rows = [
        ("backend", summary["backend"]),
        ("model", f"{DEMO_MODEL} from scratch ({_epochs(summary['epochs'])} on the digits train "
         "split)" if from_scratch else
         f"{DEMO_PRESET} fine-tuned ({_epochs(summary['epochs'])} on the digits train split "
         f"and {extra_train_data})"),
        ("parameters total / active per token",
         f"{summary['params_total']:,} / {summary['params_active']:,}"),
        ("test accuracy, Keras", f"{summary['keras_accuracy']:.4f} ({summary['test_examples']} images)"),
    ]
    for quantization, result in litert.items():
        rows.append((f"test accuracy, LiteRT {quantization}",
                     f"{result['accuracy']:.4f}" if can_run else
                     f"not run: no LiteRT interpreter ({LITERT_INSTALL_HINT})"))
    for quantization, result in litert.items():
        rows.append((
            f"{quantization} .tflite",
            f"{_size(result['path'])}, {result['latency_ms_per_image']:.2f} ms/image"
            if can_run else _size(result["path"]),
        ))
    rows += [
        ("training time", f"{summary['train_time_s']:.0f} s"),
        ("wall time", f"{wall:.0f} s"),
        ("artifacts", output_dir),
    ]
    return {"rows": rows, "summary": summary}
