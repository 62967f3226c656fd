"""LiteRT export of the two towers of an image-text dual encoder.

A device embeds images with the image tower and compares them (cosine) with
text embeddings computed once, ahead of time, by the text tower: e.g. one
embedding per class for zero-shot classification. `export_dual_encoder`
writes, into one directory:

- `image_encoder.tflite`: raw images `(batch, H, W, C)` (uint8 by default,
  in the image converter's value range) -> L2-normalised embeddings
  `(batch, dim)`; the converter's channel conversion, resize and
  `raw * scale + offset` are in the graph, as in `export_litert`
  (`include_preprocessing=False`: preprocessed float32 images instead);
- `text_encoder.tflite`: `token_ids` and `padding_mask` `(batch, length)`
  int32 -> L2-normalised embeddings `(batch, dim)`;
- with `class_names`/`prompts`: `class_embeddings.npy` (one L2-normalised row
  per class, prompt-ensembled) and `class_names.json`;
- `vocabulary.txt` (the WordPiece vocabulary of the text tower) when the
  model has a tokenizer, and `export.json` (shapes, preprocessing,
  quantization).

Both towers contain only LiteRT builtin ops (see `export_litert`). On JAX
and PyTorch the model is saved once as a backend-neutral `.keras` file and
both towers are converted by one TensorFlow-backend child process. The
directory is written atomically: it appears complete or not at all.
"""

import json
import os

import keras
import numpy as np

from keras_sparse_moe.export import handover
from keras_sparse_moe.export.litert import check_export_args
from keras_sparse_moe.export.litert import check_parent_directory
from keras_sparse_moe.export.litert import export_litert
from keras_sparse_moe.export.litert import image_converter
from keras_sparse_moe.export.litert import raw_input_spec
from keras_sparse_moe.models.moe_dual_encoder import class_text_embeddings
from keras_sparse_moe.models.moe_dual_encoder import load_dual_encoder
from keras_sparse_moe.models.moe_dual_encoder import pack_prompts
from keras_sparse_moe.utils.io import atomic_directory

IMAGE_FILE = "image_encoder.tflite"
TEXT_FILE = "text_encoder.tflite"
CLASS_EMBEDDINGS_FILE = "class_embeddings.npy"
CLASS_NAMES_FILE = "class_names.json"
VOCABULARY_FILE = "vocabulary.txt"
MANIFEST_FILE = "export.json"
# Class names of the built-in captions that calibrate an int8 text tower
# when no prompts are given.
_CALIBRATION_NAMES = ("cat", "dog", "bird", "car", "tree", "house", "person", "flower", "boat",
                      "chair", "number", "letter", "shape")


def _check_directory(directory, overwrite):
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(f"Argument `directory` must be a directory path; received {directory!r}.")
    directory = os.path.abspath(os.fspath(directory))
    check_parent_directory(directory, "the towers")
    if os.path.isfile(directory):
        raise ValueError(f"Output {directory!r} is a file; give a directory for the two towers.")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise ValueError(
            f"Output directory {directory!r} is not empty; pass overwrite=True (CLI: "
            "--overwrite) to replace it."
        )
    return directory


def _class_prompts(class_names, prompts, templates, data=None, data_options=None):
    """Class names and lists of prompts per class from the arguments (or
    from the class names and prompt templates of dataset `data`)."""
    if data is not None and class_names is None and prompts is None:
        from keras_sparse_moe.data import resolve_dataset

        from keras_sparse_moe.utils.validation import check_data_options

        info = resolve_dataset(data, **check_data_options(data_options)).info
        if not info.class_names:
            raise ValueError(f"Dataset {data!r} has no class names to make prompts from.")
        return [str(n) for n in info.class_names], info.zero_shot_prompts(templates)
    if prompts is not None:
        groups = [[p] if isinstance(p, str) else list(p) for p in prompts]
        if not groups or any(not g or not all(isinstance(t, str) for t in g) for g in groups):
            raise ValueError(
                "Argument `prompts` must be a non-empty list with, per class, a string or a "
                "non-empty list of strings."
            )
        names = list(class_names) if class_names is not None else [g[0] for g in groups]
        if len(names) != len(groups):
            raise ValueError(
                f"`class_names` has {len(names)} entries but `prompts` has {len(groups)} classes."
            )
        return names, groups
    if class_names is None:
        return None, None
    from keras_sparse_moe.data import zero_shot_prompts
    from keras_sparse_moe.data.prompts import DEFAULT_PROMPT_TEMPLATES

    names = [str(n) for n in class_names]
    return names, zero_shot_prompts(names, templates or DEFAULT_PROMPT_TEMPLATES)


def _vocabulary(task):
    tokenizer = getattr(getattr(task, "preprocessor", None), "tokenizer", None)
    vocabulary = getattr(tokenizer, "vocabulary", None) if tokenizer is not None else None
    if vocabulary is None and tokenizer is not None and hasattr(tokenizer, "get_vocabulary"):
        vocabulary = tokenizer.get_vocabulary()
    if isinstance(vocabulary, (list, tuple)) and vocabulary:
        return [str(v) for v in vocabulary]
    return None


def _manifest(task, quantization, batch_size, class_names, quantize_routers=False, raw=None):
    backbone = task.backbone
    converter = image_converter(task)
    preprocessing = None
    if converter is not None:
        preprocessing = {
            "resize_to": [int(d) for d in backbone.image_shape[:2]],
            "scale": _jsonable(getattr(converter, "scale", None)),
            "offset": _jsonable(getattr(converter, "offset", None)),
            "in_graph": raw is not None,
        }
        if raw is not None:
            preprocessing["steps"] = raw["preprocessing"]
    image_shape = raw["shape"] if raw is not None else backbone.image_shape
    value_range = raw["value_range"] if raw is not None else None
    batch = -1 if batch_size is None else batch_size  # -1: dynamic, as LiteRT's shape_signature
    manifest = {
        "format": "keras_sparse_moe dual encoder towers",
        "backbone": type(backbone).__name__,
        "quantization": quantization or "float32",
        "batch_size": batch_size,
        "image_encoder": {"file": IMAGE_FILE, "input": "images",
                          "raw_input": raw is not None,
                          "shape": [batch] + [int(d) for d in image_shape],
                          "dtype": raw["dtype"] if raw is not None else "float32",
                          "value_range": None if value_range is None else [
                              float(v) for v in value_range],
                          "preprocessing": preprocessing},
        "text_encoder": {"file": TEXT_FILE, "inputs": ["token_ids", "padding_mask"],
                         "shape": [batch, int(backbone.max_sequence_length)],
                         "dtype": "int32"},
        "embedding_dim": int(backbone.image_encoder.outputs[0].shape[-1]),
        "embeddings": "L2-normalised; similarity = dot product",
        "class_names": class_names,
    }
    if quantization == "int8":
        manifest["routers"] = "int8" if quantize_routers else "float32 (not quantized)"
    return manifest


def _jsonable(value):
    if value is None:
        return None
    array = np.asarray(value, dtype="float64")
    return array.tolist()


def _representative_images(task, representative_images, quantization, raw=None):
    """Calibration images of the image tower for int8, checked against its input."""
    if quantization != "int8":
        return None
    images = np.asarray(representative_images, dtype="float32")
    expected = tuple(raw["shape"]) if raw is not None else tuple(task.backbone.image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        kind = "raw images" if raw is not None else "preprocessed images"
        raise ValueError(
            f"Argument `representative_images` must be {kind} of shape (N,) + {expected} (the "
            f"image tower's input); received shape {images.shape}."
        )
    return images


def _text_calibration(task, groups):
    texts = [t for g in (groups or []) for t in g]
    if len(texts) < 16:
        from keras_sparse_moe.data import zero_shot_prompts

        texts += [t for g in zero_shot_prompts(_CALIBRATION_NAMES) for t in g]
    return pack_prompts(task, texts)


def export_dual_encoder(
    model,
    directory,
    quantization=None,
    representative_images=None,
    class_names=None,
    prompts=None,
    templates=None,
    data=None,
    batch_size=1,
    overwrite=False,
    quantize_routers=False,
    data_options=None,
    include_preprocessing=None,
    input_image_shape=None,
    input_dtype="uint8",
):
    """Export the image and text towers of a dual encoder to LiteRT.

    As `export_litert` for classifiers, the image tower takes raw images by
    default: the image converter (channel conversion, bilinear resize,
    `raw * scale + offset`) is part of its graph, with builtin ops, and
    `export.json` records the raw input (`raw_input`, `shape`, `dtype`,
    `value_range`, `preprocessing`).

    Args:
        model: a `MoEDualEncoderContrastive` task, a preset name or directory
            (e.g. `"limoe_tiny_digits"`) or a `.keras` file.
        directory: output directory (its parent must exist); written
            atomically.
        quantization: None (float32), `"float16"`, `"dynamic_int8"` or
            `"int8"` (needs `representative_images`; the text tower is
            calibrated on the class prompts plus generic captions).
        representative_images: images `(N, H, W, C)` as the image tower
            takes them (raw, or preprocessed with
            `include_preprocessing=False`), for int8.
        class_names: optional class names: `class_embeddings.npy` gets one
            prompt-ensembled text embedding per class (zero-shot on device).
        prompts: optional prompts per class (a string or a list of strings
            per class) instead of `templates` filled with `class_names`.
        templates: prompt templates with `{}` for the class name (default:
            the dataset's templates with `data`, else the generic templates
            of `keras_sparse_moe.data.prompts`).
        data: optional dataset spec (e.g. `"digits"`): class names and prompt
            templates come from it when `class_names`/`prompts` are None.
        batch_size: int >= 1, the fixed batch size of both `.tflite`
            files (default 1), or None: a dynamic batch (`LiteRTModel`
            resizes the interpreter to each call; `export.json` records
            the batch as -1).
        overwrite: replace a non-empty `directory`.
        quantize_routers: `"int8"` only: quantize the router ops too (by
            default they stay float32; see `export_litert`).
        data_options: None or a dict of more options for `data`'s source
            (e.g. `{"data_dir": "...", "download": False}` for `tfds:`).
        include_preprocessing: None (True when the model has an image
            converter), True or False (the image tower takes preprocessed
            float32 images).
        input_image_shape: `(height, width)` or `(height, width, channels)`
            of the raw images; None takes the converter's `raw_image_shape`
            (8x8x1 for the digits presets), else the model's image shape.
        input_dtype: `"uint8"` or `"float32"`, the dtype of the raw images.

    Returns:
        dict with the paths written (`image_encoder`, `text_encoder`, and
        `class_embeddings`, `vocabulary`, `manifest` when written).

    Example:
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "towers")
    >>> paths = export_dual_encoder("limoe_tiny_digits", out, data="digits")
    >>> sorted(paths)[:3]
    ['class_embeddings', 'class_names', 'image_encoder']
    """
    check_export_args(quantization, representative_images, quantize_routers, batch_size,
                      data_argument="representative_images")
    directory = _check_directory(directory, overwrite)
    task = load_dual_encoder(model)
    raw = raw_input_spec(task, include_preprocessing, input_image_shape, input_dtype)
    names, groups = _class_prompts(class_names, prompts, templates, data, data_options)
    images = _representative_images(task, representative_images, quantization, raw)
    with atomic_directory(directory) as staging:
        text_data = _text_calibration(task, groups) if quantization == "int8" else None
        _export_towers(task, staging, quantization, images, text_data, batch_size,
                       quantize_routers, raw)
        paths = {"image_encoder": IMAGE_FILE, "text_encoder": TEXT_FILE}
        if groups is not None:
            table = class_text_embeddings(task, groups).astype("float32")
            np.save(os.path.join(staging, CLASS_EMBEDDINGS_FILE), table, allow_pickle=False)
            with open(os.path.join(staging, CLASS_NAMES_FILE), "w", encoding="utf-8") as f:
                json.dump({"class_names": names, "prompts": groups}, f, indent=2)
            paths["class_embeddings"] = CLASS_EMBEDDINGS_FILE
            paths["class_names"] = CLASS_NAMES_FILE
        vocabulary = _vocabulary(task)
        if vocabulary:
            with open(os.path.join(staging, VOCABULARY_FILE), "w", encoding="utf-8") as f:
                f.write("\n".join(vocabulary) + "\n")
            paths["vocabulary"] = VOCABULARY_FILE
        with open(os.path.join(staging, MANIFEST_FILE), "w", encoding="utf-8") as f:
            json.dump(_manifest(task, quantization, batch_size, names, quantize_routers, raw), f,
                      indent=2)
        paths["manifest"] = MANIFEST_FILE
    return {key: os.path.join(directory, name) for key, name in paths.items()}


def _export_towers(task, directory, quantization, images, text_data, batch_size,
                   quantize_routers=False, raw=None):
    """Convert both towers into `directory`: here on TensorFlow, else in one
    TensorFlow-backend child (which runs this function on the saved task)."""
    if keras.backend.backend() != "tensorflow":
        handover.convert_in_child(
            task, directory, quantization, batch_size, quantize_routers, raw,
            {"--representative": images, "--text-representative": text_data}, "--towers")
        return
    backbone = task.backbone
    export_litert(backbone.image_encoder, os.path.join(directory, IMAGE_FILE),
                  quantization=quantization, representative_data=images, batch_size=batch_size,
                  quantize_routers=quantize_routers, include_preprocessing=raw is not None,
                  input_image_shape=raw["shape"] if raw is not None else None,
                  input_dtype=raw["dtype"] if raw is not None else "uint8",
                  image_converter=image_converter(task))
    export_litert(backbone.text_encoder, os.path.join(directory, TEXT_FILE),
                  quantization=quantization, representative_data=text_data,
                  batch_size=batch_size, quantize_routers=quantize_routers)


def export_towers_in_child(task, directory, quantization, images, text_data, batch_size,
                           quantize_routers=False, include_preprocessing=False,
                           input_image_shape=None, input_dtype="uint8"):
    """Child-process side of `_export_towers` (TensorFlow backend): `task`
    is the dual encoder loaded from the parent's `.keras` file."""
    raw = raw_input_spec(task, include_preprocessing, input_image_shape, input_dtype)
    _export_towers(task, directory, quantization, images, text_data, batch_size,
                   quantize_routers, raw)


def _preprocess(images, preprocessing):
    """The image tower's preprocessing (from `export.json`) in NumPy."""
    images = np.asarray(images, dtype="float32")
    if not preprocessing:
        return images
    size = tuple(preprocessing.get("resize_to") or images.shape[1:3])
    if tuple(images.shape[1:3]) != size:
        images = keras.ops.convert_to_numpy(
            keras.ops.image.resize(images, size, interpolation="bilinear")
        )
    if preprocessing.get("scale") is not None:
        images = images * np.asarray(preprocessing["scale"], dtype="float32")
    if preprocessing.get("offset") is not None:
        images = images + np.asarray(preprocessing["offset"], dtype="float32")
    return images.astype("float32")


def evaluate_towers(directory, data="digits", split="test", num_threads=2, data_options=None):
    """Zero-shot accuracy of exported towers on a labelled dataset split,
    run entirely by the LiteRT interpreter: images through
    `image_encoder.tflite` (raw images of its input size when it includes
    the preprocessing, else preprocessed as `export.json` says), compared
    with `class_embeddings.npy`.

    Args:
        directory: output of `export_dual_encoder` with class embeddings.
        data: dataset spec with labels whose classes are those of the
            class embeddings (e.g. `"digits"`).
        split: `"test"`, `"validation"` or `"train"`.
        num_threads: interpreter threads.
        data_options: extra `build_datasets` options.

    Returns:
        dict with `zero_shot_accuracy`, `num_examples`, `split`.
    """
    from keras_sparse_moe.data import build_datasets
    from keras_sparse_moe.export.litert import LiteRTModel

    directory = os.fspath(directory)
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    table_path = os.path.join(directory, CLASS_EMBEDDINGS_FILE)
    for path in (manifest_path, table_path):
        if not os.path.isfile(path):
            raise ValueError(
                f"{directory!r} has no {os.path.basename(path)}: export the towers with "
                "class names (export_dual_encoder(..., class_names=...) or CLI --data)."
            )
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    table = np.load(table_path, allow_pickle=False)
    image_spec = manifest["image_encoder"]
    runner = LiteRTModel(os.path.join(directory, image_spec["file"]), num_threads=num_threads)
    height, width, channels = image_spec["shape"][1:]
    raw_input = bool(image_spec.get("raw_input"))
    datasets = build_datasets(data, image_size=(height, width), batch_size=128, channels=channels,
                              rescale=False, **dict(data_options or {}))
    ds = {"train": datasets.train, "validation": datasets.validation,
          "test": datasets.test}.get(split)
    if ds is None:
        raise ValueError(f"Dataset {data!r} has no {split!r} split.")
    if table.shape[0] != datasets.info.num_classes:
        raise ValueError(
            f"The towers hold {table.shape[0]} class embeddings but {data!r} has "
            f"{datasets.info.num_classes} classes."
        )
    correct, total = 0, 0
    for images, labels in ds:
        images = np.asarray(images)
        if not raw_input:
            images = _preprocess(images, image_spec.get("preprocessing"))
        elif image_spec.get("dtype") == "uint8":
            images = np.clip(np.round(images), 0, 255)  # resized images, as an app would send
        embeddings = runner(images)
        predictions = np.argmax(embeddings @ table.T, axis=-1)
        correct += int(np.sum(predictions == np.asarray(labels)))
        total += len(predictions)
    return {"zero_shot_accuracy": correct / max(total, 1), "num_examples": total, "split": split}
