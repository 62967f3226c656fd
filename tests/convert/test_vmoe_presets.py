"""The presets of the published V-MoE checkpoints (their hyper-parameters
against vmoe's paper configs, by config arithmetic only) and
`convert_vmoe(..., preset=NAME)`: the checkpoint is checked against the
preset and, without a vmoe config, fills the preset's model (routing
included)."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.convert import CheckpointError
from keras_sparse_moe.convert import convert_vmoe
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.presets import get_preset
from keras_sparse_moe.presets import register_preset
from keras_sparse_moe.presets import unregister_preset

MODELS = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vmoe", "models")

# name: (vmoe checkpoint prefix, image size, patch, classes, representation_size,
#        capacity factor, eval capacity factor), from vmoe/configs/vmoe_paper/.
PUBLISHED = {
    "vmoe_s32_ilsvrc2012": (
        "vmoe_s32_last2_ilsvrc2012_randaug_light1", 224, 32, 1000, 512, 1.05, 4.0),
    "vmoe_s32_ilsvrc2012_384": (
        "vmoe_s32_last2_ilsvrc2012_randaug_light1_ft_ilsvrc2012", 384, 32, 1000, None, 1.5, 1.5),
    "vmoe_b16_imagenet21k": (
        "vmoe_b16_imagenet21k_randaug_strong", 224, 16, 21843, None, 1.05, 1.05),
    "vmoe_b16_ilsvrc2012_384": (
        "vmoe_b16_imagenet21k_randaug_strong_ft_ilsvrc2012", 384, 16, 1000, None, 1.5, 1.5),
}


def vmoe_capacity(group_size, capacity_factor, k=2, experts=8, multiple_of=4):
    """vmoe.moe.compute_capacity for token choice with vmoe's defaults."""
    capacity = int(math.ceil(group_size * k * capacity_factor / experts))
    return capacity + (-capacity) % multiple_of


@pytest.mark.single_backend
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_checkpoint_presets_follow_vmoe_configs(name):
    prefix, image, patch, classes, representation, cf, eval_cf = PUBLISHED[name]
    spec = get_preset(name)
    assert f"gs://vmoe_checkpoints/{prefix};" in spec.description
    assert f"--preset {name}`" in spec.description
    assert spec.task_cls is MoEViTImageClassifier
    assert spec.task_config == {"num_classes": classes, "representation_size": representation}
    config = spec.backbone_config
    assert config["image_shape"] == (image, image, 3) and config["patch_size"] == patch
    assert config["mlp_activation"] == "gelu_approximate" and config["pooling"] == "token"
    tokens = (image // patch) ** 2 + 1
    moe = config["moe_kwargs"]
    # vmoe: group_size = 8 images x tokens, batch priority off, 0.005 losses.
    assert moe["group_size"] == 8 * tokens
    assert moe["batch_priority"] is False and moe["aux_loss_convention"] == "vmoe"
    assert moe["importance_loss_weight"] == moe["load_loss_weight"] == 0.005
    assert moe["dropout_placement"] == "vmoe"
    profile = MoEViTBackbone.profile_config(config)  # no model is built
    for layer in profile.moe_layers:
        assert layer.group_size == 8 * tokens
        assert layer.capacity_train == vmoe_capacity(8 * tokens, cf)
        assert layer.capacity_eval == vmoe_capacity(8 * tokens, eval_cf)
    blocks = [int(layer.name.split("_")[2].split("/")[0]) for layer in profile.moe_layers]
    assert blocks == ([5, 7] if patch == 32 else [1, 3, 5, 7, 9, 11])


@pytest.mark.single_backend
def test_s32_capacity_at_384_is_vmoes():
    # The example: S/32 at 384px (145 tokens, groups of 8 images), cf 1.5.
    (layer, _) = MoEViTBackbone.profile_config(
        get_preset("vmoe_s32_ilsvrc2012_384").backbone_config).moe_layers
    assert (layer.group_size, layer.capacity_train) == (1160, 436)


# The fixture model vmoe_token transcribed from its config.json (variant
# tc_k2_cf0.5, a capacity that drops tokens) as a preset.
FIXTURE_PRESET = {
    "image_shape": (16, 16, 3), "patch_size": 4, "num_layers": 2, "num_heads": 2,
    "hidden_dim": 8, "mlp_dim": 16, "num_experts": 4, "top_k": 2, "moe_layers": [0],
    "capacity_factor": 0.5, "mlp_activation": "gelu_approximate", "pooling": "token",
    "dropout_rate": 0.1,
    "moe_kwargs": {"group_size": 34, "batch_priority": False, "capacity_multiple_of": 4,
                   "capacity_formula": "vmoe", "aux_loss_convention": "vmoe",
                   "dropout": 0.1, "dropout_placement": "vmoe"},
}


@pytest.fixture
def fixture_preset():
    names = []

    def register(name, task_config=None, **changes):
        names.append(name)
        register_preset(name, family="test", description="vmoe_token fixture, no weights.",
                        backbone_cls=MoEViTBackbone,
                        backbone_config={**FIXTURE_PRESET, **changes},
                        task_cls=MoEViTImageClassifier if task_config else None,
                        task_config=task_config, overwrite=True)
        return name

    yield register
    for name in names:
        unregister_preset(name)


def checkpoint_without_config(tmp_path):
    """vmoe_token's checkpoint files alone (no config.json beside them)."""
    target = tmp_path / "checkpoint"
    target.mkdir()
    for name in os.listdir(os.path.join(MODELS, "vmoe_token")):
        if name.startswith("params."):
            shutil.copy(os.path.join(MODELS, "vmoe_token", name), target)
    return target / "params"


def test_convert_with_a_preset_uses_its_routing(tmp_path, fixture_preset):
    name = fixture_preset("test_vmoe_token", task_config={"num_classes": 5})
    model = convert_vmoe(checkpoint_without_config(tmp_path), tmp_path / "out", preset=name)
    io = np.load(os.path.join(MODELS, "vmoe_token", "io.npz"))
    logits = ops.convert_to_numpy(model(io["images"], training=False))
    np.testing.assert_allclose(logits, io["tc_k2_cf0.5/logits"], rtol=0, atol=1e-5)
    with open(tmp_path / "out" / "config.json") as f:
        saved = json.load(f)["config"]
    assert saved["moe_kwargs"]["group_size"] == 34 and saved["capacity_factor"] == 0.5
    assert model.backbone.sparse_moe_layers[0].capacity() == 12  # vmoe: ceil(8.5) -> 12


@pytest.mark.single_backend
def test_a_mismatched_preset_names_every_difference(tmp_path, fixture_preset):
    name = fixture_preset("test_vmoe_wrong", task_config={"num_classes": 7},
                          hidden_dim=16, moe_layers=[1])
    checkpoint = checkpoint_without_config(tmp_path)
    with pytest.raises(CheckpointError) as info:
        convert_vmoe(checkpoint, tmp_path / "out", preset=name)
    message = str(info.value)
    assert "\n" not in message and "'test_vmoe_wrong'" in message
    for part in ("hidden_dim: preset 16, checkpoint 8", "moe_layers: preset [1], checkpoint [0]",
                 "num_classes: preset 7, checkpoint 5"):
        assert part in message
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(CheckpointError, match="image_shape: preset .224, 224, 3."):
        convert_vmoe(checkpoint, tmp_path / "out", preset="vmoe_s32_ilsvrc2012")
    with pytest.raises(CheckpointError, match="not a MoEViTBackbone"):
        convert_vmoe(checkpoint, tmp_path / "out", preset="moe_vit_tiny_digits")
    assert not os.path.exists(tmp_path / "out")
