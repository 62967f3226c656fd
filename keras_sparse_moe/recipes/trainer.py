"""`train`: the one training entry point, for image classifiers and dual
encoders."""

import os

from keras_sparse_moe.recipes.config import TrainingConfig


def _task_class(model):
    """The Keras class of `model`: a model instance, a registered preset
    name, a preset directory or a `.keras` file."""
    import keras

    if isinstance(model, keras.Model):
        return type(model)
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "Argument `model` must be a Keras model, a preset name, a preset directory or a "
            f".keras file; received {type(model).__name__}."
        )
    name = os.fspath(model)
    if name.endswith(".keras"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"No model file at {name!r}.")
        from keras_sparse_moe.utils.io import load_keras_file

        return type(load_keras_file(name, compile=False))
    if not os.path.isdir(name) and "://" not in name:
        from keras_sparse_moe.presets import get_preset

        spec = get_preset(name)  # an unknown name: a ValueError with suggestions
        if spec.task_cls is not None:
            return spec.task_cls
    from keras_sparse_moe.presets import from_preset

    return type(from_preset(name, load_weights=False))


def is_dual_encoder(model):
    """Whether `model` (a model, preset name, preset directory or `.keras`
    file) is a contrastive dual encoder rather than an image classifier.

    Example:
    >>> is_dual_encoder("limoe_tiny"), is_dual_encoder("moe_vit_tiny")
    (True, False)
    """
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive

    return issubclass(_task_class(model), MoEDualEncoderContrastive)


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
    >>> metrics["settings"]["epochs"], 0.0 <= metrics["accuracy"] <= 1.0
    (1, True)
    """
    if config is None:
        config = TrainingConfig()
    if not isinstance(config, TrainingConfig):
        raise ValueError(f"Argument `config` must be a TrainingConfig or None; received {config!r}.")
    if is_dual_encoder(model):
        from keras_sparse_moe.recipes.dual_encoder import train_dual_encoder

        return train_dual_encoder(model, data, output_dir, config, **options)
    from keras_sparse_moe.recipes.classifier import train_classifier

    return train_classifier(model, data, output_dir, config, **options)
