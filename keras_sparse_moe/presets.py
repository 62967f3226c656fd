"""Preset registry: named model configurations, optionally with shipped weights.

A *preset* names a model configuration (and, when weights ship, a
keras-hub-format preset directory). Model families register their presets
at import time; users build them by name:

>>> import keras_sparse_moe
>>> model = keras_sparse_moe.presets.from_preset("moe_vit_tiny", load_weights=False)
>>> type(model).__name__
'MoEViTImageClassifier'

`register_preset` adds one: an architecture built from a config, or a
keras-hub-format preset directory with weights. `from_preset` builds a
registered name or loads a preset directory / `hf://` / `kaggle://` handle;
`save_to_preset` writes a directory atomically; `PresetMixin` gives the
model classes the same `from_preset` and `save_to_preset` (docs/models.md,
"Presets").

A preset directory holds `config.json` (backbone), `model.weights.h5`,
`metadata.json` and, for a task, `task.json`, `task.weights.h5`,
`preprocessor.json` plus converter configs / `assets/`. It is read with
Keras deserialization in safe mode (no lambdas, no pickle).

This module imports no model: the model families register their presets
when `keras_sparse_moe.models` is imported (as `import keras_sparse_moe`
does).
"""

import dataclasses
import difflib
import inspect
import json
import math
import os
import re
import threading
import zipfile

import keras
import keras_hub

from keras_sparse_moe.profiling import profile_config
from keras_sparse_moe.utils.deferred_init import build_then_load
from keras_sparse_moe.utils.io import atomic_directory
from keras_sparse_moe.utils.io import check_hdf5_file
from keras_sparse_moe.utils.validation import check_choice
from keras_sparse_moe.version import __version__

PRESETS_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets_data")
"""Directory of preset directories shipped inside the package."""

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_CONFIG_FILE = "config.json"
_TASK_CONFIG_FILE = "task.json"
_WEIGHTS_FILE = "model.weights.h5"
_SHARDED_WEIGHTS_FILE = "model.weights.json"
_TASK_WEIGHTS_FILE = "task.weights.h5"
_JSON_FILES = (
    _CONFIG_FILE,
    _TASK_CONFIG_FILE,
    "metadata.json",
    "preprocessor.json",
    "image_converter.json",
    "tokenizer.json",
    "audio_converter.json",
    "video_converter.json",
    _SHARDED_WEIGHTS_FILE,
)

_REGISTRY = {}
_PARAM_CACHE = {}
_SAVING = threading.local()


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """One registered preset (see `register_preset` for the fields)."""

    name: str
    family: str
    description: str
    backbone_cls: type = None
    backbone_config: dict = None
    task_cls: type = None
    task_config: dict = None
    preprocessor: object = None
    weights: str = None
    paper: str = None

    @property
    def has_weights(self):
        """Whether the preset ships trained weights."""
        return self.weights is not None

    @property
    def weights_path(self):
        """The preset directory (or hub handle) holding the weights, or None."""
        if self.weights is None or "://" in self.weights or os.path.isabs(self.weights):
            return self.weights
        return os.path.join(PRESETS_DATA_DIR, self.weights)


# --------------------------------------------------------------------------
# Registration and listing
# --------------------------------------------------------------------------
def register_preset(
    name,
    *,
    family,
    description,
    backbone_cls=None,
    backbone_config=None,
    task_cls=None,
    task_config=None,
    preprocessor=None,
    weights=None,
    paper=None,
    overwrite=False,
):
    """Register a named preset.

    Two kinds of presets:

    1. *Architecture presets* (no weights): give `backbone_cls` and
       `backbone_config` (constructor kwargs), and for a task also
       `task_cls`, `task_config` (task kwargs other than `backbone` and
       `preprocessor`, e.g. `{"num_classes": 10}`) and `preprocessor`.
       `from_preset` builds `backbone_cls(**backbone_config)`, then
       `preprocessor(backbone)` and
       `task_cls(backbone=..., preprocessor=..., **task_config)`.
    2. *Weight presets*: give `weights`, a keras-hub-format preset directory
       (as written by `save_to_preset`); a relative path is resolved against
       `PRESETS_DATA_DIR` (`keras_sparse_moe/presets_data/`), an absolute
       path or an `hf://` / `kaggle://` handle is used as is. The model
       classes and configs are read from the directory, so the
       `*_cls`/`*_config` arguments may be omitted (if given they are only
       used for listing).

    Args:
        name: str, lower-case letters, digits and underscores.
        family: str, model family, e.g. `"moe_vit"`.
        description: str, one or two sentences; cite the paper and say
            whether weights ship.
        backbone_cls: a `keras_hub.models.Backbone` subclass.
        backbone_config: dict of `backbone_cls` constructor kwargs.
        task_cls: None or a `keras_hub.models.Task` subclass.
        task_config: None or dict of task kwargs.
        preprocessor: None or a callable `preprocessor(backbone)` returning
            the task's preprocessor layer (or None).
        weights: None or the preset directory / handle with the weights.
        paper: None or a str reference (e.g. an arXiv URL).
        overwrite: bool, replace an existing preset of the same name.

    Returns:
        The registered `PresetSpec`.

    Example:
    >>> from keras_sparse_moe.models import MoEViTBackbone
    >>> spec = register_preset(
    ...     "my_vit_demo", family="moe_vit", description="A demo, no weights.",
    ...     backbone_cls=MoEViTBackbone,
    ...     backbone_config=dict(image_shape=(8, 8, 1), patch_size=4, num_layers=2,
    ...         num_heads=2, hidden_dim=16, mlp_dim=32, num_experts=4),
    ...     overwrite=True)
    >>> from_preset("my_vit_demo").moe_layer_indices
    (1,)
    >>> unregister_preset("my_vit_demo")
    """
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            "Argument `name` must be a non-empty string of lower-case letters, digits and "
            f"underscores; received name={name!r}."
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A preset named '{name}' is already registered (family "
            f"'{_REGISTRY[name].family}'). Pass overwrite=True to replace it."
        )
    for arg, value in (("family", family), ("description", description)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"Argument `{arg}` must be a non-empty string; received {value!r}.")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Argument `weights` must be None or a preset directory / hub handle string; "
            f"received weights={weights!r}."
        )
    if weights is None and backbone_cls is None:
        raise ValueError(
            f"Preset '{name}': pass `backbone_cls` and `backbone_config` (an architecture "
            "preset) or `weights` (a preset directory)."
        )
    for arg, cls in (("backbone_cls", backbone_cls), ("task_cls", task_cls)):
        if cls is not None and not inspect.isclass(cls):
            raise ValueError(f"Argument `{arg}` must be a class; received {cls!r}.")
    for arg, config in (("backbone_config", backbone_config), ("task_config", task_config)):
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"Argument `{arg}` must be a dict or None; received {config!r}.")
    if task_config and task_cls is None:
        raise ValueError(f"Preset '{name}': `task_config` was given without `task_cls`.")
    if preprocessor is not None and not callable(preprocessor):
        raise ValueError(
            "Argument `preprocessor` must be None or a callable taking the backbone; "
            f"received {preprocessor!r}."
        )
    spec = PresetSpec(
        name=name,
        family=family,
        description=description.strip(),
        backbone_cls=backbone_cls,
        backbone_config=dict(backbone_config or {}),
        task_cls=task_cls,
        task_config=dict(task_config or {}),
        preprocessor=preprocessor,
        weights=None if weights is None else os.fspath(weights),
        paper=paper,
    )
    _REGISTRY[name] = spec
    _PARAM_CACHE.pop(name, None)
    return spec


def unregister_preset(name):
    """Remove a registered preset (no error if it is absent).

    Example:
    >>> unregister_preset("no_such_preset")
    """
    _REGISTRY.pop(name, None)
    _PARAM_CACHE.pop(name, None)


def get_preset(name):
    """The `PresetSpec` registered as `name`.

    Raises a `ValueError` naming the closest registered names if unknown.

    Example:
    >>> get_preset("moe_vit_tiny").family
    'moe_vit'
    """
    if name not in _REGISTRY:
        raise ValueError(_unknown_preset_message(name))
    return _REGISTRY[name]


def list_presets(family=None, params=True):
    """Describe the registered presets.

    Args:
        family: None (all) or a family name, e.g. `"moe_vit"`.
        params: bool, include the backbone's trainable and active-per-token
            parameter counts (see `keras_sparse_moe.profile` for what counts
            as active), computed once per preset and cached: by the backbone
            class's `param_counts_from_config(config)` class method when it
            has one (returning `{"total": int, "active": int}` without
            allocating weights, so paper-sized presets are cheap), otherwise
            by `keras_sparse_moe.profile.profile_config`.

    Returns:
        A list of dicts sorted by family and name, with keys `name`, `family`,
        `backbone`, `task` (class names or None), `params_total`,
        `params_active` (parameters used per token; None when `params=False`),
        `has_weights`, `weights`, `input` (the raw images the task's
        preprocessor expects, e.g. `"8x8x1, values 0..16"`; None for
        backbone-only presets), `description`, `paper`.

    Example:
    >>> rows = list_presets(family="moe_vit")
    >>> "moe_vit_tiny" in [row["name"] for row in rows]
    True
    """
    if family is not None:
        check_choice("family", family, {spec.family for spec in _REGISTRY.values()})
    rows = []
    for spec in sorted(_REGISTRY.values(), key=lambda s: (s.family, s.name)):
        if family is not None and spec.family != family:
            continue
        counts = _param_counts(spec) if params else {"total": None, "active": None}
        backbone_cls, _, task_cls = _spec_model(spec)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "backbone": getattr(backbone_cls, "__name__", None),
                "task": getattr(task_cls, "__name__", None),
                "params_total": counts["total"],
                "params_active": counts["active"],
                "has_weights": spec.has_weights,
                "weights": spec.weights_path,
                "input": _input_description(spec),
                "description": spec.description,
                "paper": spec.paper,
            }
        )
    return rows


def preset_classes(preset):
    """The `(backbone class, task class or None)` of a model, read without
    building it: from the registry for a registered name, from
    `config.json` / `task.json` for a preset directory, from the archive's
    `config.json` for a `.keras` file, or the classes of a model instance.

    Args:
        preset: a registered preset name, a preset directory, a `.keras`
            file or a Keras model.

    Example:
    >>> [cls.__name__ for cls in preset_classes("moe_vit_tiny")]
    ['MoEViTBackbone', 'MoEViTImageClassifier']
    """
    if isinstance(preset, keras.Model):
        backbone = getattr(preset, "backbone", None)
        if backbone is None:
            return type(preset), None
        return type(backbone), type(preset)
    if isinstance(preset, os.PathLike):
        preset = os.fspath(preset)
    if isinstance(preset, str) and preset in _REGISTRY:
        backbone_cls, _, task_cls = _spec_model(_REGISTRY[preset])
        return backbone_cls, task_cls
    if isinstance(preset, str) and preset.endswith(".keras") and os.path.isfile(preset):
        return _keras_file_classes(preset)
    if not isinstance(preset, str) or not os.path.isdir(preset):
        raise ValueError(_unknown_preset_message(preset))
    _check_preset_directory(preset, load_weights=False)
    _, backbone_cls, _, task_cls = _read_preset_directory(preset)
    return backbone_cls, task_cls


def _keras_file_classes(path):
    """`(backbone class, task class or None)` from a `.keras` archive's
    `config.json` (a task file nests its backbone's config)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .keras file ({error}).") from None
    top = keras.saving.get_registered_object(config.get("registered_name"))
    nested = config.get("config", {}).get("backbone")
    if isinstance(nested, dict):
        return keras.saving.get_registered_object(nested.get("registered_name")), top
    return top, None


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------
def from_preset(preset, load_weights=True, **overrides):
    """Build or load a model from a preset.

    Args:
        preset: a registered preset name (see `list_presets()`), a path to a
            keras-hub-format preset directory, or an `hf://` / `kaggle://`
            handle (loaded by keras-hub's `from_preset`: the backbone, or the
            task when called as `TaskClass.from_preset(handle)`).
        load_weights: bool, load the weights when the preset has them.
            Architecture presets always start from random weights.
        **overrides: constructor arguments replacing the preset's, routed by
            name: backbone arguments (e.g. `image_shape`, `num_experts`,
            `dtype`) go to the backbone, the others (e.g. `num_classes`) to
            the task. Overriding `num_classes` skips loading the head weights.

    Returns:
        The task model if the preset has one, otherwise the backbone.

    Example:
    >>> model = from_preset("moe_vit_tiny", load_weights=False, num_experts=4)
    >>> model.backbone.num_experts
    4
    """
    return _load(preset, cls=None, load_weights=load_weights, overrides=overrides)


def _load(preset, cls, load_weights, overrides):
    """Shared by `from_preset` and `PresetMixin.from_preset`.

    `cls` None returns what the preset holds; a Backbone subclass returns
    the backbone; a Task subclass returns a task of that class.
    """
    if isinstance(preset, os.PathLike):
        preset = os.fspath(preset)
    if not isinstance(preset, str) or not preset:
        raise ValueError(
            "Argument `preset` must be a preset name, a preset directory path or an "
            f"'hf://' / 'kaggle://' handle; received preset={preset!r}."
        )
    if not isinstance(load_weights, bool):
        raise ValueError(f"Argument `load_weights` must be a bool; received {load_weights!r}.")
    label = preset
    if preset in _REGISTRY:
        spec = _REGISTRY[preset]
        if not spec.has_weights:
            return _build_from_spec(spec, cls, overrides)
        preset = spec.weights_path
        if "://" not in preset and not os.path.isdir(preset):
            raise FileNotFoundError(
                f"Preset '{label}' keeps its weights in the preset directory '{preset}', "
                "which does not exist (reinstall keras-sparse-moe, or register the "
                "preset again with the right `weights` path)."
            )
    elif os.path.exists(preset) and not os.path.isdir(preset):
        raise ValueError(
            f"Preset path '{preset}' is a file; a preset is a directory holding "
            f"{_CONFIG_FILE} (write one with keras_sparse_moe.presets.save_to_preset)."
        )
    elif (
        not os.path.isdir(preset)
        and "://" not in preset
        and preset not in keras_hub.models.Backbone.presets
    ):
        raise ValueError(_unknown_preset_message(preset))
    if os.path.isdir(preset):
        return _load_directory(preset, cls, load_weights, overrides, label)
    # A hub handle or a keras-hub built-in name: keras-hub's own `from_preset`
    # (which also converts Transformers / timm checkpoints).
    if cls is None:
        return keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, **overrides)
    return super(PresetMixin, cls).from_preset(preset, load_weights=load_weights, **overrides)


def _route(label, cls, backbone_cls, task_cls, overrides):
    """What to build from a preset holding `backbone_cls` (and `task_cls`)
    when asked for `cls`, and the overrides of each part.

    Returns:
        `(task_cls, backbone_over, task_over, input_over)`: the task class to
        build (None: the backbone only; `cls` when the preset's own task is
        not a `cls`), the backbone and task constructor overrides, and the
        image converter overrides (`INPUT_OVERRIDES`).
    """
    if cls is not None:
        _check_compatible(label, cls, backbone_cls, task_cls)
        if not issubclass(cls, keras_hub.models.Task):
            task_cls = None
        elif task_cls is None or not issubclass(task_cls, cls):
            task_cls = cls
    overrides, input_over = _pop_input_overrides(label, overrides, task_cls is not None)
    backbone_over, task_over = _split_overrides(label, overrides, backbone_cls, task_cls)
    return task_cls, backbone_over, task_over, input_over


def _build_from_spec(spec, cls, overrides):
    """Build an architecture preset with random weights."""
    task_cls, backbone_over, task_over, input_over = _route(
        spec.name, cls, spec.backbone_cls, spec.task_cls, overrides
    )
    backbone = _construct(
        spec.name, spec.backbone_cls, {**spec.backbone_config, **backbone_over}, backbone_over
    )
    if task_cls is None:
        return backbone
    preprocessor = spec.preprocessor(backbone) if spec.preprocessor is not None else None
    kwargs = {**(spec.task_config if task_cls is spec.task_cls else {}), **task_over}
    task_kwargs = {"backbone": backbone, "preprocessor": preprocessor, **kwargs}
    task = _construct(spec.name, task_cls, task_kwargs, task_over)
    _apply_input_overrides(spec.name, task, input_over, backbone_over)
    return task


def _load_directory(preset, cls, load_weights, overrides, label):
    """Load a keras-hub-format preset directory."""
    _check_preset_directory(preset, load_weights)
    config, backbone_cls, task_config, saved_task_cls = _read_preset_directory(preset)
    task_cls, backbone_over, task_over, input_over = _route(
        label, cls, backbone_cls, saved_task_cls, overrides
    )
    backbone = _load_backbone(preset, config, backbone_over, load_weights, label)
    if task_cls is None:
        return backbone
    if task_cls is saved_task_cls:
        task_config["config"] = {**task_config["config"], "backbone": backbone, **task_over}
        task = keras.saving.deserialize_keras_object(task_config)
        if hasattr(task.preprocessor, "load_preset_assets"):
            task.preprocessor.load_preset_assets(preset)
        task_weights = os.path.join(preset, _TASK_WEIGHTS_FILE)
        if load_weights and "num_classes" not in task_over and os.path.isfile(task_weights):
            task.load_task_weights(task_weights)
    else:
        preprocessor = None
        has_preprocessing = any(
            os.path.isfile(os.path.join(preset, name))
            for name in ("preprocessor.json", "image_converter.json", "tokenizer.json")
        )
        if task_cls.preprocessor_cls is not None and has_preprocessing:
            preprocessor = task_cls.preprocessor_cls.from_preset(preset)
        task_kwargs = {"backbone": backbone, "preprocessor": preprocessor, **task_over}
        task = _construct(label, task_cls, task_kwargs, task_over)
    _apply_input_overrides(label, task, input_over, backbone_over)
    return task


def _load_backbone(preset, config, overrides, load_weights, label):
    """The backbone of a preset directory: `config` (from `config.json`) with
    the `overrides`, deserialized in Keras safe mode, then its weights."""
    overrides = dict(overrides)
    overrides["dtype"] = _load_dtype(config, overrides.get("dtype"))
    config = {**config, "config": {**config["config"], **overrides}}
    if not load_weights:
        return keras.saving.deserialize_keras_object(config)
    weights = os.path.join(preset, _WEIGHTS_FILE)
    if not os.path.isfile(weights):
        weights = os.path.join(preset, _SHARDED_WEIGHTS_FILE)

    def load(backbone):
        try:
            backbone.load_weights(weights)
        except OSError as error:  # h5py: a file damaged past its header
            raise ValueError(
                f"Preset weights file '{weights}' cannot be read ({error}); the preset "
                "directory is corrupt."
            ) from None
        except (ValueError, TypeError, KeyError) as error:
            changed = {k: v for k, v in overrides.items() if k != "dtype"}
            hint = (
                f" The overrides {changed} change the architecture; pass "
                "load_weights=False to start from random weights."
                if changed
                else ""
            )
            raise ValueError(
                f"Cannot load the backbone weights of preset '{label}': {error}.{hint}"
            ) from error

    # On JAX the weights replace the random initial values before any is drawn.
    return build_then_load(lambda: keras.saving.deserialize_keras_object(config), load)


def _load_dtype(config, dtype):
    """The dtype policy to build a preset's backbone in.

    A dtype given by the caller wins. Otherwise a preset saved with a float
    or mixed policy loads in the current global policy (its weights are
    cast), and a quantized one (a `DTypePolicyMap`) as saved.
    """
    if dtype is not None:
        return dtype
    saved = config.get("config", {}).get("dtype")
    if isinstance(saved, dict) and "DTypePolicyMap" in str(saved.get("class_name")):
        return saved
    return None


def _read_json(preset, filename):
    with open(os.path.join(preset, filename), encoding="utf-8") as handle:
        return json.load(handle)


def _read_preset_directory(path):
    """`(config, backbone class, task config or None, task class or None)`
    of a preset directory: the serialized backbone (`config.json`) and task
    (`task.json`) and the registered classes they name."""
    config = _read_json(path, _CONFIG_FILE)
    backbone_cls = _registered_class(config, path, _CONFIG_FILE)
    task_config = task_cls = None
    if os.path.isfile(os.path.join(path, _TASK_CONFIG_FILE)):
        task_config = _read_json(path, _TASK_CONFIG_FILE)
        task_cls = _registered_class(task_config, path, _TASK_CONFIG_FILE)
    return config, backbone_cls, task_config, task_cls


def _check_preset_directory(path, load_weights):
    """Fail early, naming the file, on a missing or corrupt preset file."""
    config_path = os.path.join(path, _CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"Preset directory '{path}' has no {_CONFIG_FILE}; a preset directory is "
            "written by keras_sparse_moe.presets.save_to_preset (or keras-hub's "
            "save_to_preset)."
        )
    for name in _JSON_FILES:
        file_path = os.path.join(path, name)
        if os.path.isfile(file_path):
            try:
                with open(file_path, encoding="utf-8") as handle:
                    json.load(handle)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(
                    f"Preset file '{file_path}' is not valid JSON ({error}); the preset "
                    "directory is corrupt."
                ) from error
    if not load_weights:
        return
    weights = os.path.join(path, _WEIGHTS_FILE)
    sharded = os.path.join(path, _SHARDED_WEIGHTS_FILE)
    if not os.path.isfile(weights) and not os.path.isfile(sharded):
        raise FileNotFoundError(
            f"Preset directory '{path}' has no weights file {_WEIGHTS_FILE}; pass "
            "load_weights=False to build the model with random weights."
        )
    for name in (_WEIGHTS_FILE, _TASK_WEIGHTS_FILE):
        file_path = os.path.join(path, name)
        if os.path.isfile(file_path):
            check_hdf5_file(file_path, what="Preset weights file")


def _registered_class(config, preset, filename):
    if not isinstance(config, dict) or "registered_name" not in config:
        raise ValueError(
            f"Preset file '{filename}' in '{preset}' is not a serialized Keras object "
            "(no 'registered_name')."
        )
    name = config["registered_name"]
    if name in ("Functional", "Sequential"):
        return keras.Model
    cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise ValueError(
            f"Preset file '{filename}' in '{preset}' holds a {name}, which is not a class "
            "registered with Keras (keras.saving.register_keras_serializable); import the "
            "module that defines it first."
        )
    return cls


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------
def save_to_preset(model, directory, max_shard_size=10):
    """Save a keras-hub `Backbone` or `Task` as a preset directory, atomically.

    Everything is written to a temporary directory beside `directory`, which
    then replaces `directory` by renames, so a crash never leaves a half
    written preset. An existing `directory` must be empty or a preset
    directory (holding `config.json`); anything else is refused.

    A preset holds the configuration, the weights and the preprocessing, not
    the optimizer's state (which `from_preset` never restores): a trained
    model is saved through an untrained copy with the same weights.

    Args:
        model: a `keras_hub.models.Backbone` or `keras_hub.models.Task`.
        directory: path of the preset directory to write.
        max_shard_size: float or None, keras-hub weight sharding size in GB.

    Returns:
        The absolute path of the preset directory.

    Example:
    >>> import tempfile, os
    >>> model = from_preset("moe_vit_tiny")
    >>> path = save_to_preset(model, os.path.join(tempfile.mkdtemp(), "tiny"))
    >>> sorted(f for f in os.listdir(path) if f.endswith(".json"))[:2]
    ['config.json', 'image_converter.json']
    """
    if not isinstance(model, (keras_hub.models.Backbone, keras_hub.models.Task)):
        raise ValueError(
            "Argument `model` must be a keras_hub.models.Backbone or keras_hub.models.Task "
            f"(e.g. a keras_sparse_moe model); received {type(model).__name__}."
        )
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(f"Argument `directory` must be a path; received {directory!r}.")
    target = os.path.abspath(os.fspath(directory))
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ValueError(f"Cannot save a preset to '{target}': it is a file.")
        if os.listdir(target) and not os.path.isfile(os.path.join(target, _CONFIG_FILE)):
            raise ValueError(
                f"Refusing to replace '{target}': it is a non-empty directory that is not "
                f"a preset (no {_CONFIG_FILE})."
            )
    model = _without_optimizer_state(model)
    with atomic_directory(target) as tmp:
        _SAVING.active = True
        try:
            model.save_to_preset(tmp, max_shard_size=max_shard_size)
        finally:
            _SAVING.active = False
        _stamp_metadata(tmp)
    return target


def _without_optimizer_state(model):
    """`model`, or an untrained copy with its weights if its optimizer holds
    state (keras-hub would save that state into `task.weights.h5`)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False) or not optimizer.variables:
        return model
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _stamp_metadata(path):
    """Record the keras-sparse-moe version beside keras-hub's metadata."""
    metadata_path = os.path.join(path, "metadata.json")
    metadata = {}
    if os.path.isfile(metadata_path):
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    metadata["keras_sparse_moe_version"] = __version__
    with open(metadata_path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=4)


# --------------------------------------------------------------------------
# Mixin for model classes
# --------------------------------------------------------------------------
class _classproperty:
    """A read-only property of the class (like keras-hub's `presets`)."""

    def __init__(self, getter):
        self.getter = getter
        self.__doc__ = getter.__doc__

    def __get__(self, instance, owner):
        return self.getter(owner)


class PresetMixin:
    """Registry-aware `from_preset` and atomic `save_to_preset` for keras-hub
    `Backbone` / `Task` subclasses. Put it first in the bases:
    `class MyBackbone(PresetMixin, keras_hub.models.Backbone)`.

    Example:
    >>> from keras_sparse_moe.models import MoEViTBackbone
    >>> MoEViTBackbone.from_preset("moe_vit_tiny").hidden_dim
    64
    """

    @_classproperty
    def presets(cls):
        """Registered presets this class can be built from: {name: PresetSpec}."""
        usable = {}
        for spec in _REGISTRY.values():
            backbone_cls, _, task_cls = _spec_model(spec)
            try:
                _check_compatible(spec.name, cls, backbone_cls, task_cls)
            except ValueError:
                continue
            usable[spec.name] = spec
        return usable

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build `preset` (a registered name, a preset directory or a hub
        handle) as an instance of this class; see
        `keras_sparse_moe.presets.from_preset` for the arguments."""
        return _load(preset, cls=cls, load_weights=load_weights, overrides=kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Atomically save this model as a keras-hub-format preset directory."""
        if getattr(_SAVING, "active", False):
            return super().save_to_preset(preset_dir, max_shard_size=max_shard_size)
        return save_to_preset(self, preset_dir, max_shard_size=max_shard_size)


class PreprocessingPresetMixin:
    """Registry-aware `from_preset` for the preprocessors, tokenizers and
    image converters (put it first in the bases).

    A registered preset name loads from that preset's directory. keras-hub's
    own `from_preset` accepts only presets whose backbone class is exactly
    this class's `backbone_cls`; this one also loads the presets of its
    subclasses (e.g. a `LIMoEBackbone` preset for a class declaring
    `MoEDualEncoderBackbone`).

    Example:
    >>> from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
    >>> MoEViTImageClassifierPreprocessor.from_preset(
    ...     "moe_vit_tiny_digits").image_converter.image_size
    (16, 16)
    """

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Load from a registered preset name, a preset directory or a hub
        handle; keyword arguments override the saved configuration."""
        from keras_hub.src.utils.preset_utils import get_preset_loader

        preset = _preprocessing_preset_path(cls, preset)
        loader = get_preset_loader(preset)
        backbone_cls = loader.check_backbone_class()
        if backbone_cls is cls.backbone_cls or not issubclass(backbone_cls, cls.backbone_cls):
            return super().from_preset(preset, **kwargs)
        if issubclass(cls, keras_hub.models.Preprocessor):
            return loader.load_preprocessor(cls, kwargs.pop("config_file", "preprocessor.json"),
                                            **kwargs)
        if issubclass(cls, keras_hub.tokenizers.Tokenizer):
            return loader.load_tokenizer(cls, kwargs.pop("config_file", "tokenizer.json"), **kwargs)
        return loader.load_image_converter(cls, **kwargs)


def _preprocessing_preset_path(cls, preset):
    """The directory of a registered preset, else `preset` unchanged."""
    if isinstance(preset, os.PathLike):
        preset = os.fspath(preset)
    if not isinstance(preset, str) or preset not in _REGISTRY:
        return preset
    spec = _REGISTRY[preset]
    if not spec.has_weights:
        shipped = sorted(name for name, other in _REGISTRY.items() if other.has_weights)
        raise ValueError(
            f"Preset '{preset}' is an architecture without saved preprocessing; build "
            f"{cls.__name__} for its backbone (e.g. `for_backbone`), or load a preset with "
            f"weights ({', '.join(shipped)})."
        )
    return spec.weights_path


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def _unknown_preset_message(name):
    names = sorted(_REGISTRY)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"Unknown preset {name!r}.{hint} Call keras_sparse_moe.presets.list_presets() to "
        "see the registered presets; a preset may also be a path to a preset directory or "
        "an 'hf://' / 'kaggle://' handle."
    )


def _spec_model(spec):
    """`(backbone class, backbone config, task class or None)` of a preset,
    read from its preset directory for a weight preset registered without
    classes (`(None, {}, None)` when that is a hub handle)."""
    if spec.backbone_cls is not None or not spec.has_weights:
        return spec.backbone_cls, spec.backbone_config, spec.task_cls
    if not os.path.isdir(spec.weights_path):
        return None, {}, None
    config, backbone_cls, _, task_cls = _read_preset_directory(spec.weights_path)
    return backbone_cls, dict(config["config"]), task_cls


def _check_compatible(label, cls, backbone_cls, task_cls):
    if issubclass(cls, keras_hub.models.Task):
        expected = getattr(cls, "backbone_cls", None)
        if task_cls is not None and issubclass(task_cls, cls):
            return
        if expected is not None and backbone_cls is not None and issubclass(backbone_cls, expected):
            return
        raise ValueError(
            f"Preset '{label}' holds a {getattr(backbone_cls, '__name__', None)} backbone"
            f"{' and a ' + task_cls.__name__ if task_cls else ''}, which "
            f"{cls.__name__} cannot use. Call keras_sparse_moe.presets.from_preset('{label}') "
            "instead."
        )
    if backbone_cls is None or not issubclass(backbone_cls, cls):
        raise ValueError(
            f"Preset '{label}' holds a {getattr(backbone_cls, '__name__', None)} backbone, "
            f"which is not a {cls.__name__}. Call "
            f"keras_sparse_moe.presets.from_preset('{label}') instead."
        )


def _init_params(cls):
    """Names of the keyword arguments of `cls.__init__`."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name
        for name, p in params.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _split_overrides(label, overrides, backbone_cls, task_cls):
    """Route each override to the backbone or the task, by argument name."""
    backbone_names = _init_params(backbone_cls) | {"dtype"}
    task_names = set()
    if task_cls is not None:
        task_names = (_init_params(task_cls) | {"name"}) - {"backbone", "preprocessor"}
    else:
        backbone_names |= {"name"}
    backbone_over, task_over = {}, {}
    for key, value in overrides.items():
        if key in backbone_names:
            backbone_over[key] = value
        elif key in task_names:
            task_over[key] = value
        else:
            allowed = sorted(backbone_names | task_names)
            close = difflib.get_close_matches(key, allowed, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            what = backbone_cls.__name__ + (f" / {task_cls.__name__}" if task_cls else "")
            raise ValueError(
                f"Unknown override `{key}` for preset '{label}' ({what}).{hint} Allowed "
                f"overrides: {allowed}."
            )
    return backbone_over, task_over


def _construct(label, cls, kwargs, overrides):
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(
            f"Cannot build preset '{label}' as {cls.__name__}: {error}. Pass the missing "
            f"arguments as overrides, e.g. {cls.__name__}.from_preset('{label}', "
            "num_classes=10)."
        ) from error
    except ValueError as error:
        if not overrides:
            raise
        raise ValueError(
            f"Cannot build preset '{label}' ({cls.__name__}) with overrides "
            f"{overrides}: {error}"
        ) from error


INPUT_OVERRIDES = ("scale", "offset", "value_range", "raw_image_shape")
"""`from_preset` overrides that set the task's image converter: the
converter computes `raw * scale + offset` after resizing, and declares the
raw pixel `value_range` and `raw_image_shape` it is made for."""


def _pop_input_overrides(label, overrides, want_task):
    """Split the image converter overrides (`INPUT_OVERRIDES`) off."""
    found = {key: overrides[key] for key in INPUT_OVERRIDES if key in overrides}
    if found and not want_task:
        raise ValueError(
            f"Overrides {sorted(found)} set the image converter of a task's preprocessor; "
            f"preset '{label}' is built as a backbone here, which has none. Pass them to "
            "the preprocessor instead, e.g. MoEViTImageClassifierPreprocessor.for_backbone("
            "backbone, scale=..., offset=..., value_range=...)."
        )
    return {k: v for k, v in overrides.items() if k not in found}, found


def _check_scaling(name, value):
    """A float or a per-channel list/tuple of floats, finite; or None."""
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        ok = len(values) > 0 and all(
            not isinstance(v, bool) and math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"Override `{name}` must be a finite float or a per-channel list of floats; "
            f"received {name}={value!r}."
        )
    if isinstance(value, (list, tuple)):
        return type(value)(float(v) for v in values)
    return float(value)


def _apply_input_overrides(label, model, input_over, backbone_over):
    """Make the task's image converter follow an `image_shape` override and
    apply the `INPUT_OVERRIDES`.

    - `image_shape` sets the resize target and the declared
      `raw_image_shape`. When it changes the number of channels and no
      scaling override is given, the raw images are taken to be 8-bit
      (`value_range` (0, 255)) and the scale is set so that they map to the
      model's input range (e.g. digits presets: 0..255 -> [0, 1]).
    - `value_range` alone rescales the converter so that the new raw range
      maps to the same model inputs.
    - `scale` / `offset` are used as given; the declared `value_range` is
      the raw range they map onto the model's input range (unless given).
    """
    preprocessor = getattr(model, "preprocessor", None)
    converter = getattr(preprocessor, "image_converter", None)
    if converter is None:
        if input_over:
            raise ValueError(
                f"Overrides {sorted(input_over)} set the image converter, but preset "
                f"'{label}' has no image preprocessor."
            )
        return
    declares = hasattr(converter, "raw_image_shape")
    image_shape = backbone_over.get("image_shape")
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if converter.image_size is not None:
            converter.image_size = tuple(image_shape[:2])
        if declares:
            before = converter.raw_image_shape
            converter.raw_image_shape = image_shape
            changed_channels = before is not None and before[-1] != image_shape[-1]
            if (changed_channels and not input_over and converter.value_range is not None
                    and converter.value_range != (0.0, 255.0)):
                input_over = {"value_range": (0, 255)}
    if not input_over:
        return
    if not declares:
        raise ValueError(
            f"Overrides {sorted(input_over)} need an image converter that declares its raw "
            f"input ({type(converter).__name__} does not)."
        )
    try:
        if "scale" in input_over or "offset" in input_over:
            scale = _check_scaling("scale", input_over.get("scale", converter.scale))
            offset = _check_scaling("offset", input_over.get("offset", converter.offset))
            value_range = input_over.get("value_range")
            if value_range is None and converter.value_range is not None:
                low, high = converter.model_value_range
                mean_scale = sum(scale) / len(scale) if isinstance(scale, (list, tuple)) else (
                    1.0 if scale is None else scale)
                mean_offset = (sum(offset) / len(offset) if isinstance(offset, (list, tuple))
                               else (offset or 0.0))
                if mean_scale > 0:
                    value_range = ((low - mean_offset) / mean_scale,
                                   (high - mean_offset) / mean_scale)
            settings = {"scale": scale, "offset": offset, "value_range": value_range}
        elif "value_range" in input_over:
            settings = converter.rescaled_to(input_over["value_range"])
        else:
            settings = {}
        if "raw_image_shape" in input_over:
            settings["raw_image_shape"] = input_over["raw_image_shape"]
        probe = type(converter)(**{**converter.get_config(), **settings})
    except ValueError as error:
        raise ValueError(f"Preset '{label}': {error}") from None
    for key in ("scale", "offset", "value_range", "raw_image_shape"):
        setattr(converter, key, getattr(probe, key))


def _input_description(spec):
    """`"HxWxC, values LOW..HIGH"`: the raw images a preset's preprocessor
    expects (its image converter's `raw_image_shape`, or the backbone's
    `image_shape`, and `value_range`), read without building the model."""
    if spec.has_weights:
        if not os.path.isfile(os.path.join(spec.weights_path, "image_converter.json")):
            return None  # a hub handle, or a preset without an image converter
        settings = _read_json(spec.weights_path, "image_converter.json").get("config", {})
        image_shape = None
    elif spec.preprocessor is None:
        return None
    else:
        settings = getattr(spec.preprocessor, "keywords", None) or {}
        image_shape = spec.backbone_config.get("image_shape")
    shape = settings.get("raw_image_shape") or image_shape
    value_range = settings.get("value_range")
    parts = []
    if shape:
        parts.append("x".join(str(int(d)) for d in shape))
    if value_range:
        parts.append(f"values {float(value_range[0]):g}..{float(value_range[1]):g}")
    return ", ".join(parts) or None


def _param_counts(spec):
    """Backbone parameter counts of a preset, computed once and cached."""
    if spec.name not in _PARAM_CACHE:
        backbone_cls, backbone_config, _ = _spec_model(spec)
        counts = {"total": None, "active": None}
        counter = getattr(backbone_cls, "param_counts_from_config", None)
        if counter is not None:
            counts = dict(counter(backbone_config))
        elif backbone_cls is not None:
            report = profile_config(backbone_cls, dict(backbone_config))
            counts = {"total": int(report.params_total), "active": int(report.params_active)}
        _PARAM_CACHE[spec.name] = counts
    return _PARAM_CACHE[spec.name]
