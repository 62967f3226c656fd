"""Convert google-research/vmoe V-MoE and Soft MoE checkpoints to keras-hub
presets."""

import functools
import inspect
import json
import os
import re

import numpy as np

from keras_sparse_moe.convert.flax_checkpoint import CheckpointError
from keras_sparse_moe.convert.flax_checkpoint import open_checkpoint
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.presets import save_to_preset

_BLOCK = re.compile(r"^Encoder/encoderblock_(\d+)/")
_ROUTERS = {
    "NoisyTopExpertsPerItemRouter": "token_choice",
    "NoisyTopItemsPerExpertRouter": "expert_choice",
    # vmoe/projects/soft_moe/router.py; its configs name it 'SoftRouter'.
    "SoftRouter": "soft",
}
_ATTENTION = (("query", "_query_dense"), ("key", "_key_dense"), ("value", "_value_dense"),
              ("out", "_output_dense"))


def _shapes(params):
    """`{name: shape}` of a params dict: all the architecture is read from."""
    return {name: tuple(np.shape(value)) for name, value in params.items()}


def _position_embedding(vmoe_config):
    """vmoe's `encoder.position_emb` name, None when the config gives none
    (then the checkpoint tells: a learned table or sincos2d), and its
    sincos2d temperature."""
    encoder = (vmoe_config or {}).get("encoder") or {}
    position = dict(encoder.get("position_emb") or {})
    name = position.get("name")
    temperature = position.get("temperature", 10_000.0)
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        temperature = float("nan")  # refused below
    if name is None:
        return None, temperature
    if name not in ("learned", "sincos2d"):
        raise CheckpointError(
            f"Position embedding {name!r} of the vmoe config is not convertible; supported: "
            "'learned', 'sincos2d'."
        )
    if not 0 < temperature < float("inf"):
        raise CheckpointError(
            f"The vmoe config's sincos2d temperature {position.get('temperature')!r} is not "
            "a positive number."
        )
    return name, temperature


def _image_shape(image_size, patch, channels, patches=None):
    """(height, width, channels) from `image_size` (int or (h, w)), checked
    against the number of patches of a learned position table if any."""
    if image_size is None:
        if patches is None:
            raise CheckpointError(
                "The checkpoint has no learned position embedding ('Encoder/posembed_input/"
                "pos_embedding'), so the image size cannot be read off the parameter shapes: "
                "give it (image_size=, --image-size)."
            )
        side = int(round(patches ** 0.5))
        if side * side != patches:
            raise CheckpointError(
                f"The position embedding has {patches} patch positions, not a square grid; "
                "give the image size (image_size=, --image-size)."
            )
        return (side * patch[0], side * patch[1], channels)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
        raise CheckpointError(
            f"image_size must be an int or (height, width) of positive ints; received "
            f"{image_size!r}."
        )
    if size[0] % patch[0] or size[1] % patch[1]:
        raise CheckpointError(
            f"image_size {size} is not divisible by the checkpoint's patch size {patch}."
        )
    grid = (size[0] // patch[0]) * (size[1] // patch[1])
    if patches is not None and grid != patches:
        raise CheckpointError(
            f"image_size {size} gives {grid} patches, but the checkpoint's learned position "
            f"embedding has {patches}."
        )
    return size + (channels,)


def _architecture(shapes, vmoe_config=None, image_size=None):
    """Model hyper-parameters read off the parameter shapes `{name: shape}`
    (and, for what the shapes do not hold, the vmoe config and
    `image_size`)."""
    if "embedding/kernel" not in shapes or "Encoder/encoder_norm/scale" not in shapes:
        raise CheckpointError(
            "The checkpoint is not a V-MoE VisionTransformerMoe params tree (no "
            "'embedding/kernel' or 'Encoder/encoder_norm/scale'); its top-level names are "
            f"{sorted({name.split('/')[0] for name in shapes})}."
        )
    ph, pw, channels, dim = shapes["embedding/kernel"]
    blocks = sorted({int(m.group(1)) for m in map(_BLOCK.match, shapes) if m})
    if blocks != list(range(len(blocks))) or not blocks:
        raise CheckpointError(f"Encoder blocks are not numbered 0..n-1: found {blocks}.")
    prefix = "Encoder/encoderblock_0/SelfAttention/query/kernel"
    num_heads = shapes[prefix][1]
    moe_layers = [
        i for i in blocks
        if f"Encoder/encoderblock_{i}/Moe/Router/dense/kernel" in shapes
        or f"Encoder/encoderblock_{i}/Moe/Router/mu" in shapes
    ]
    num_experts, mlp_dim, slots = 1, None, set()
    for i in blocks:
        if i in moe_layers:
            num_experts, _, mlp_dim = shapes[f"Encoder/encoderblock_{i}/Moe/Mlp/Dense_0/kernel"]
            mu = f"Encoder/encoderblock_{i}/Moe/Router/mu"
            if mu in shapes:
                slots.add(shapes[mu][-1])
        else:
            mlp_dim = shapes[f"Encoder/encoderblock_{i}/Mlp/Dense_0/kernel"][1]
    if len(slots) > 1:
        raise CheckpointError(
            f"The Soft MoE blocks have different numbers of slots per expert {sorted(slots)}; "
            "only one number for all blocks is convertible."
        )
    if "cls" in shapes:
        pooling = "token"
    elif "MapHead/probe" in shapes:
        pooling = "map"
    else:
        pooling = "gap"
    table = "Encoder/posembed_input/pos_embedding"
    position, temperature = _position_embedding(vmoe_config)
    if table in shapes:
        if position not in (None, "learned"):
            raise CheckpointError(
                f"The vmoe config has {position} position embeddings, but the checkpoint holds "
                f"a learned table '{table}'."
            )
        patches = shapes[table][1] - (1 if pooling == "token" else 0)
    elif position == "learned":
        raise CheckpointError(
            f"The vmoe config has learned position embeddings, but the checkpoint lacks '{table}'."
        )
    else:  # no table: vmoe's sincos2d (no parameters)
        position, patches = "sincos2d", None
    position = position or "learned"
    if "head/kernel" not in shapes:
        raise CheckpointError("The checkpoint has no classification head ('head/kernel').")
    return {
        "image_shape": _image_shape(image_size, (ph, pw), channels, patches),
        "patch_size": (ph, pw) if ph != pw else ph,
        "num_layers": len(blocks),
        "num_heads": num_heads,
        "hidden_dim": dim,
        "mlp_dim": mlp_dim,
        "num_experts": num_experts,
        "moe_layers": moe_layers or "none",
        "pooling": pooling,
        "position_embedding": position,
        "position_embedding_temperature": temperature if position == "sincos2d" else 10_000.0,
        "attention_qk_norm": "Encoder/encoderblock_0/SelfAttention/query_ln/scale" in shapes,
        "slots_per_expert": slots.pop() if slots else None,
        "representation_size": (
            shapes["pre_logits/kernel"][1] if "pre_logits/kernel" in shapes else None
        ),
        "num_classes": shapes["head/kernel"][1],
    }


def _router_kind(shapes, vmoe_config):
    """The project's router name for the checkpoint's MoE blocks."""
    router = dict(((vmoe_config or {}).get("encoder", {}).get("moe") or {}).get("router") or {})
    soft = any(name.endswith("/Moe/Router/mu") for name in shapes)
    default = "SoftRouter" if soft else "NoisyTopExpertsPerItemRouter"
    name = router.get("name", default).rsplit(".", 1)[-1]
    if name not in _ROUTERS:
        raise CheckpointError(
            f"Router {router.get('name')!r} of the vmoe config is not convertible; supported: "
            f"{sorted(_ROUTERS)}."
        )
    if (name == "SoftRouter") != soft:
        raise CheckpointError(
            f"The vmoe config's router {name!r} does not match the checkpoint, whose routers "
            f"have {'Soft MoE' if soft else 'dense'} parameters "
            f"({'Router/mu' if soft else 'Router/dense/kernel'})."
        )
    return _ROUTERS[name]


def _soft_routing(router, moe, arch):
    """Backbone routing arguments of vmoe's Soft MoE `SoftRouter`."""
    slots = arch["slots_per_expert"]
    num_slots = router.get("num_slots")
    if num_slots is not None and int(num_slots) != slots:
        raise CheckpointError(
            f"The vmoe config gives num_slots={num_slots}, but the checkpoint's Router/mu has "
            f"{slots} slots per expert."
        )
    options = {"slots_per_expert": slots, "bfloat16_dispatch": True}
    if float(router.get("noise_std", 0.0)):  # training only, as in vmoe
        options["noise_std"] = float(router["noise_std"])
    if moe.get("group_size"):
        options["group_size"] = int(moe["group_size"])
    return {"router": "soft", "capacity_factor": 1.0, "moe_kwargs": options}


def _routing(vmoe_config, kind="token_choice", arch=None):
    """Backbone routing arguments from a vmoe model config (`encoder.moe`)."""
    moe = dict((vmoe_config or {}).get("encoder", {}).get("moe") or {})
    router = dict(moe.get("router") or {})
    dispatcher = dict(router.get("dispatcher") or {})
    if kind == "soft":
        arguments = _soft_routing(router, moe, arch)
        _dropout(arguments, vmoe_config, moe)
        return arguments
    options = {
        "capacity_rounding": dispatcher.get("capacity_ceil_or_round", "ceil"),
        "capacity_multiple_of": int(dispatcher.get("capacity_multiple_of", 4) or 1),
        "capacity_formula": "vmoe",
        "dropout_placement": "vmoe",
    }
    if dispatcher.get("capacity") is not None:
        options["capacity"] = int(dispatcher["capacity"])
    if moe.get("group_size"):
        options["group_size"] = int(moe["group_size"])
    arguments = {
        "router": kind,
        "capacity_factor": float(dispatcher.get("capacity_factor", 1.0)),
        "top_k": int(router.get("num_selected_experts", 1)) if kind == "token_choice" else 1,
    }
    if kind == "token_choice":
        options.update(
            noise_std=float(router.get("noise_std", 1.0)),
            batch_priority=bool(dispatcher.get("batch_priority", False)),
            importance_loss_weight=float(router.get("importance_loss_weight", 1.0)),
            load_loss_weight=float(router.get("load_loss_weight", 1.0)),
            load_balancing_loss_weight=float(router.get("gshard_loss_weight", 0.0)),
            aux_loss_convention="vmoe",
        )
    arguments["moe_kwargs"] = options
    _dropout(arguments, vmoe_config, moe)
    return arguments


def _dropout(arguments, vmoe_config, moe):
    dropout = (vmoe_config or {}).get("encoder", {}).get("dropout_rate")
    if dropout is not None:
        arguments["dropout_rate"] = float(dropout)
        arguments["moe_kwargs"]["dropout"] = float(moe.get("dropout_rate", dropout))


def build_classifier(params, vmoe_config=None, image_size=None):
    """A `MoEViTImageClassifier` holding the weights of a vmoe params dict.

    Args:
        params: `{"a/b": ndarray}` (see `read_checkpoint`).
        vmoe_config: None or the vmoe model config dict (routing, dropout,
            position embedding; None: vmoe's token choice defaults, or Soft
            MoE for a checkpoint with Soft MoE routers).
        image_size: None, an int or (height, width): the image size, needed
            when the checkpoint has no learned position table (sincos2d);
            otherwise read off the table (and checked when given).
    """
    shapes = _shapes(params)
    model = _build_model(shapes, vmoe_config, image_size)
    placement = _placement(model, shapes)
    for name, value in params.items():
        _place(placement, name, value)
    return model


def _build_model(shapes, vmoe_config=None, image_size=None):
    """The `MoEViTImageClassifier` of a checkpoint's parameter shapes
    (initial weights)."""
    arch = _architecture(shapes, vmoe_config, image_size)
    routing = {}
    if arch["moe_layers"] != "none":
        routing = _routing(vmoe_config, _router_kind(shapes, vmoe_config), arch)
    backbone = MoEViTBackbone(
        image_shape=arch["image_shape"], patch_size=arch["patch_size"],
        num_layers=arch["num_layers"], num_heads=arch["num_heads"],
        hidden_dim=arch["hidden_dim"], mlp_dim=arch["mlp_dim"],
        num_experts=arch["num_experts"], moe_layers=arch["moe_layers"],
        pooling=arch["pooling"], mlp_activation="gelu_approximate",
        position_embedding=arch["position_embedding"],
        position_embedding_temperature=arch["position_embedding_temperature"],
        attention_qk_norm=arch["attention_qk_norm"],
        layer_norm_epsilon=1e-6, **routing,
    )
    return MoEViTImageClassifier(
        backbone, num_classes=arch["num_classes"],
        representation_size=arch["representation_size"],
    )


def _placement(model, shapes):
    """`{checkpoint name: model variable}` for every parameter, checked from
    the shapes alone: a parameter missing, without a place, or of the wrong
    shape is an error naming it."""
    backbone = model.backbone
    placement = {}

    def put(variable, name, reshape=None):
        if name not in shapes:
            raise CheckpointError(f"The checkpoint lacks {name!r} (partial tree).")
        shape = shapes[name]
        if reshape is not None and int(np.prod(shape)) == int(np.prod(reshape)):
            shape = tuple(reshape)
        if tuple(shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{name!r} has shape {tuple(shapes[name])}; the model needs "
                f"{tuple(variable.shape)}."
            )
        placement[name] = variable

    def dense(layer, name):
        put(layer.kernel, f"{name}/kernel")
        put(layer.bias, f"{name}/bias")

    def norm(layer, name):
        put(layer.gamma, f"{name}/scale")
        put(layer.beta, f"{name}/bias")

    def attention(layer, name):
        for theirs, ours in _ATTENTION:
            dense(getattr(layer, ours), f"{name}/{theirs}")
        if getattr(layer, "qk_norm_epsilon", None) is not None:
            put(layer.query_norm.gamma, f"{name}/query_ln/scale")
            put(layer.key_norm.gamma, f"{name}/key_ln/scale")

    embedding = backbone.get_layer("patching_and_embedding")
    if backbone.pooling == "token":
        put(embedding.class_token, "cls")
    dense(embedding.patch_embedding, "embedding")
    if backbone.position_embedding == "learned":
        table = embedding.position_embedding.embeddings
        put(table, "Encoder/posembed_input/pos_embedding", reshape=tuple(table.shape))
    for i, block in enumerate(backbone.encoder_blocks):
        prefix = f"Encoder/encoderblock_{i}"
        norm(block.norm1, f"{prefix}/LayerNorm_0")
        attention(block.attention, f"{prefix}/SelfAttention")
        norm(block.norm2, f"{prefix}/LayerNorm_1")
        if block.is_moe:
            router = block.mlp.router
            if block.mlp.router_type == "soft":  # mu (D, E, P) -> (D, E * P)
                put(router.kernel, f"{prefix}/Moe/Router/mu", reshape=tuple(router.kernel.shape))
                put(router.scale, f"{prefix}/Moe/Router/scale")
            else:
                put(router.kernel, f"{prefix}/Moe/Router/dense/kernel")
            experts = block.mlp.experts
            put(experts.kernel_in, f"{prefix}/Moe/Mlp/Dense_0/kernel")
            put(experts.bias_in, f"{prefix}/Moe/Mlp/Dense_0/bias")
            put(experts.kernel_out, f"{prefix}/Moe/Mlp/Dense_1/kernel")
            put(experts.bias_out, f"{prefix}/Moe/Mlp/Dense_1/bias")
        else:
            dense(block.mlp_in, f"{prefix}/Mlp/Dense_0")
            dense(block.mlp_out, f"{prefix}/Mlp/Dense_1")
    norm(backbone.get_layer("final_norm"), "Encoder/encoder_norm")
    if model.map_head is not None:
        put(model.map_head.probe, "MapHead/probe")
        attention(model.map_head.attention, "MapHead/MultiHeadDotProductAttention")
        norm(model.map_head.norm, "MapHead/LayerNorm")
        dense(model.map_head.mlp_in, "MapHead/Mlp/Dense_0")
        dense(model.map_head.mlp_out, "MapHead/Mlp/Dense_1")
    if model.pre_logits is not None:
        dense(model.pre_logits, "pre_logits")
    dense(model.output_dense, "head")
    unknown = sorted(set(shapes) - set(placement))
    if unknown:
        listed = ", ".join(f"{name} {tuple(shapes[name])}" for name in unknown[:8])
        raise CheckpointError(
            f"{len(unknown)} checkpoint parameters have no place in the model: {listed}."
        )
    return placement


def _place(placement, name, value):
    """Assign one checkpoint array to its variable (float32, finite)."""
    variable = placement[name]
    value = np.asarray(value, dtype="float32").reshape(tuple(variable.shape))
    if not np.isfinite(value).all():
        raise CheckpointError(f"{name!r} holds non-finite values (NaN or inf).")
    variable.assign(value)


def _load_config(checkpoint_path, config):
    if isinstance(config, dict):
        return config
    if config is None:
        directory = checkpoint_path if os.path.isdir(checkpoint_path) else os.path.dirname(
            os.path.abspath(checkpoint_path))
        config = os.path.join(directory, "config.json")
        if not os.path.isfile(config):
            return None
    try:
        with open(config, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Cannot read the vmoe config {config}: {error}") from None


def convert_vmoe(checkpoint, output_dir, preset=None, config=None, image_size=None):
    """Convert a vmoe V-MoE or Soft MoE checkpoint to a keras-hub preset
    directory.

    Reads vmoe's sharded checkpoint (`PREFIX.index` + `PREFIX.data-*-of-*`,
    given as the prefix, the index, a shard or their directory) or a flax
    msgpack params file, without flax, jax or vmoe. The architecture is read
    off the parameter shapes (token / expert choice routers or vmoe's Soft
    MoE `SoftRouter`, qk-normalised attention, class token / GAP / MAP,
    pre-logits); the routing (router, `top_k`, capacity, group size, batch
    priority, loss weights) and the position embedding (learned or
    `sincos2d`) come from the vmoe model config (`config`, or `config.json`
    beside the checkpoint; without one vmoe's token choice defaults with
    `capacity_factor=1`, or the Soft MoE router for a Soft MoE checkpoint).
    With `preset` (e.g. `"vmoe_s32_ilsvrc2012"`, one per published
    checkpoint) the checkpoint is first checked against the preset's
    architecture (every mismatch named), and without a vmoe config the model
    is the preset's, routing included, filled with the checkpoint. Every
    parameter is mapped; the result is an `MoEViTImageClassifier` saved
    atomically with `save_to_preset` (nothing is written on error). The
    names and shapes are checked and the model built before any value is
    read; the values then stream into the model one array at a time (peak
    memory: the model plus about the largest array).

    Args:
        checkpoint: path of the checkpoint.
        output_dir: directory of the preset to write (must not be a file).
        preset: None or a registered `MoEViTBackbone` preset name whose
            architecture the checkpoint must match (the conversion fails
            otherwise); without a vmoe config it also gives the routing.
        config: None, a vmoe model config dict or the path of its JSON.
        image_size: None, an int or (height, width). Needed when the
            checkpoint has no learned position table (`sincos2d` position
            embeddings: the shapes do not tell the image size); with a
            learned table it is read off the table (and checked if given).

    Returns:
        The converted `MoEViTImageClassifier`.

    Raises:
        ValueError (`CheckpointError`): one line naming the problem.
    """
    output_dir = os.fspath(output_dir)
    if os.path.isfile(output_dir):
        raise CheckpointError(f"Output path {output_dir} is a file, not a directory.")
    # The shapes first (vmoe's index, or a pass over the flax file keeping no
    # array): every check that needs no values, then the model, then the
    # values streamed into it one array at a time. Peak memory: the model
    # plus about one array, not the model plus the checkpoint.
    opened = open_checkpoint(checkpoint)
    shapes = opened.shapes
    vmoe_config = _load_config(os.fspath(checkpoint), config)
    if preset is not None:
        _check_preset(shapes, preset)
    if preset is not None and vmoe_config is None:
        # The preset holds the architecture and the routing of the config
        # that trained the checkpoint: build it and fill it.
        model = MoEViTImageClassifier.from_preset(preset, load_weights=False,
                                                  **_head_arguments(shapes))
    else:
        model = _build_model(shapes, vmoe_config, image_size=image_size)
    placement = _placement(model, shapes)
    opened.read(functools.partial(_place, placement))  # every value checked before writing
    save_to_preset(model, output_dir)
    return model


def _head_arguments(shapes):
    arch = _architecture(shapes)
    return {"num_classes": arch["num_classes"],
            "representation_size": arch["representation_size"]}


def _check_preset(shapes, preset):
    """Raise a `CheckpointError` listing every architecture argument of the
    registered `preset` that the checkpoint's parameter shapes contradict."""
    from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
    from keras_sparse_moe.presets import get_preset

    try:
        spec = get_preset(preset)
    except (KeyError, ValueError) as error:
        raise CheckpointError(str(error).strip("'\"")) from None
    if spec.backbone_cls is not MoEViTBackbone:
        raise CheckpointError(
            f"Preset {preset!r} is not a MoEViTBackbone architecture preset (it builds "
            f"{getattr(spec.backbone_cls, '__name__', 'a preset directory')})."
        )
    arch = _architecture(shapes)
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(MoEViTBackbone.__init__).parameters.items()}
    expected = {key: value for key, value in {**defaults, **spec.backbone_config}.items()
                if key in ("image_shape", "patch_size", "num_layers", "num_heads",
                           "hidden_dim", "mlp_dim", "num_experts", "moe_layers", "pooling")}
    expected["image_shape"] = tuple(expected["image_shape"])
    expected["moe_layers"] = list(
        resolve_moe_layers(expected["moe_layers"], expected["num_layers"]))
    actual = dict(arch, moe_layers=[] if arch["moe_layers"] == "none" else arch["moe_layers"])
    if expected["moe_layers"] == []:
        expected["num_experts"] = actual["num_experts"]
    if spec.task_config and "num_classes" in spec.task_config:
        expected["num_classes"] = spec.task_config["num_classes"]
        expected["representation_size"] = spec.task_config.get("representation_size")
    mismatched = [
        f"{key}: preset {value!r}, checkpoint {actual[key]!r}"
        for key, value in expected.items() if key in actual and value != actual[key]
    ]
    if mismatched:
        raise CheckpointError(
            f"The checkpoint does not match preset {preset!r}: {'; '.join(mismatched)}."
        )
