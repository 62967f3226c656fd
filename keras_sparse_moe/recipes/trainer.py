"""`train`: the one training entry point, for image classifiers and dual
encoders."""

import os

import keras

from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderBackbone
from keras_sparse_moe.presets import from_preset
from keras_sparse_moe.presets import preset_classes
from keras_sparse_moe.recipes.config import check_config


def is_dual_encoder(model):
    """Whether `model` (a model, preset name, preset directory or `.keras`
    file) is a contrastive dual encoder rather than an image classifier,
    decided by its classes (read without building the model).

    Example:
    >>> is_dual_encoder("limoe_tiny"), is_dual_encoder("moe_vit_tiny")
    (True, False)
    """
    if not isinstance(model, (keras.Model, str, os.PathLike)):
        raise ValueError(
            "Argument `model` must be a Keras model, a preset name, a preset directory or a "
            f".keras file; received {type(model).__name__}."
        )
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".keras"):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"No model file at {os.fspath(model)!r}.")
    if isinstance(model, str) and "://" in model:  # a hub handle: its classes need a build
        model = from_preset(model, load_weights=False)
    return any(
        isinstance(cls, type) and issubclass(cls, MoEDualEncoderBackbone)
        for cls in preset_classes(model)
    )


def train(model, data="digits", config=None, output_dir="runs/train", **options):
    """Train a classifier or a dual encoder and evaluate it.

    The optimizer (AdamW, warmup + cosine decay), the data handling and the
    seed come from `config`; the loss, metrics and evaluation from the kind
    of model:

    - an image classifier (`keras_hub.models.ImageClassifier`, e.g.
      `moe_vit_tiny`): label-smoothed cross-entropy, test-split accuracy,
      macro-F1, latency and routing statistics (`train_classifier`);
    - a dual encoder (`MoEDualEncoderContrastive`, e.g. `limoe_tiny`): the
      contrastive loss on image-caption pairs and zero-shot accuracy from
      text prompts (`train_dual_encoder`).

    Runs are resumable: calling `train` again with the same `output_dir`
    continues an interrupted run after its last finished epoch and returns
    a finished run's metrics without training.

    Args:
        model: a model, a preset name, a preset directory or a `.keras` file.
        data: dataset spec (`"digits"`, `"optdigits-train"`, `"tfds:NAME"`,
            `"folder:PATH"`).
        config: a `TrainingConfig` (None: the defaults).
        output_dir: directory for the artifacts.
        **options: options of the kind of model: `train_classifier`'s
            (`overrides`, `data_options`, `plots`, `overwrite`, `callbacks`,
            `verbose`, `return_model`, ...) or `train_dual_encoder`'s
            (`templates`, `data_options`, `plots`, `overwrite`, `callbacks`,
            `verbose`, ...).

    Returns:
        The metrics dict written to `output_dir/metrics.json`.

    Example:
    >>> import tempfile
    >>> import keras_sparse_moe as ksm
    >>> metrics = ksm.train("moe_vit_tiny", "digits", ksm.TrainingConfig(epochs=1, max_batches=2),
    ...     tempfile.mkdtemp(), verbose=0, plots=False, routing_examples=0,
    ...     single_image_latency=False,
    ...     overrides={"num_layers": 2, "hidden_dim": 16, "mlp_dim": 16, "num_heads": 2})
    >>> metrics["settings"]["epochs"], metrics["epochs_run"], metrics["examples"]
    (1, 1, 128)
    """
    config = check_config(config)
    if is_dual_encoder(model):
        from keras_sparse_moe.recipes.dual_encoder import train_dual_encoder

        return train_dual_encoder(model, data, output_dir, config, **options)
    from keras_sparse_moe.recipes.classifier import train_classifier

    return train_classifier(model, data, output_dir, config, **options)
