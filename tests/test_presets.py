"""The preset registry: listing, building, saving and loading presets."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

from keras_sparse_moe import presets
from keras_sparse_moe.layers.encoder_block import MoETransformerEncoderBlock
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
from tests.configs import MOE_VIT

TINY_BACKBONE = MOE_VIT
PAPER_PRESETS = {
    "vmoe_s32_e8_k2_last2",
    "vmoe_b16_e8_k2_every2",
    "vmoe_l16_e8_k2_every2",
    "soft_moe_b16_e128_last6",
}


@pytest.fixture
def temporary_presets():
    """Register presets for one test, unregistering them afterwards."""
    names = []

    def register(name, **kwargs):
        names.append(name)
        return presets.register_preset(name, **kwargs)

    yield register
    for name in names:
        presets.unregister_preset(name)


@pytest.fixture
def tiny_backbone_preset(temporary_presets):
    temporary_presets(
        "test_tiny_backbone",
        family="test",
        description="Tiny test backbone, no weights.",
        backbone_cls=MoEViTBackbone,
        backbone_config=TINY_BACKBONE,
        preprocessor=lambda backbone: MoEViTImageClassifierPreprocessor.for_backbone(
            backbone, scale=1 / 16
        ),
    )
    return "test_tiny_backbone"


def tiny_classifier():
    return presets.from_preset("moe_vit_tiny", **TINY_BACKBONE, num_classes=3)


def images(batch=2, seed=0):
    return np.random.default_rng(seed).integers(0, 17, (batch, 8, 8, 1)).astype("float32")


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x))


def assert_same_weights(a, b):
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)
        )


# ------------------------------------------------------------------ listing
def test_list_presets_describes_every_moe_vit_preset():
    rows = {row["name"]: row for row in presets.list_presets(family="moe_vit")}
    assert PAPER_PRESETS | {"moe_vit_tiny"} <= set(rows)
    for name in PAPER_PRESETS:
        assert rows[name]["backbone"] == "MoEViTBackbone"
        assert rows[name]["task"] is None
        assert not rows[name]["has_weights"]
        assert "No pretrained weights" in rows[name]["description"]
        assert "arxiv.org" in rows[name]["paper"]
        assert rows[name]["params_total"] >= rows[name]["params_active"] > 0
    tiny = rows["moe_vit_tiny"]
    assert tiny["task"] == "MoEViTImageClassifier"
    assert tiny["params_total"] < 500_000


def test_paper_preset_sizes_are_listed_without_building():
    rows = {row["name"]: row for row in presets.list_presets(family="moe_vit")}
    # Backbone sizes in the V-MoE / Soft MoE papers' ballpark.
    expected = {
        "vmoe_s32_e8_k2_last2": (50e6, 60e6),
        "vmoe_b16_e8_k2_every2": (250e6, 300e6),
        "vmoe_l16_e8_k2_every2": (0.95e9, 1.05e9),
        "soft_moe_b16_e128_last6": (3.6e9, 3.8e9),
    }
    for name, (low, high) in expected.items():
        assert low < rows[name]["params_total"] < high, name


def test_list_presets_counts_match_the_built_backbone():
    (row,) = [r for r in presets.list_presets() if r["name"] == "moe_vit_tiny"]
    backbone = MoEViTBackbone.from_preset("moe_vit_tiny")
    assert row["params_total"] == sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)


def test_list_presets_rejects_unknown_family():
    with pytest.raises(ValueError, match="moe_vit"):
        presets.list_presets(family="moe_vitt")


# ----------------------------------------------------------------- building
def test_from_preset_builds_the_tiny_classifier():
    model = presets.from_preset("moe_vit_tiny")
    assert isinstance(model, MoEViTImageClassifier)
    assert model.num_classes == 10
    assert model.backbone.image_shape == (16, 16, 1)
    assert model.backbone.moe_layer_indices == (1, 3)
    converter = model.preprocessor.image_converter
    assert converter.image_size == (16, 16)
    assert converter.scale == pytest.approx(1 / 16)
    # It takes the project's digits as they load: uint8 (N, 8, 8, 1), values 0..16.
    from keras_sparse_moe.data import load_digits

    digits, _ = load_digits("test")
    x = keras.ops.convert_to_numpy(model.preprocessor(digits[:4]))
    assert x.shape[1:] == model.backbone.image_shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() == pytest.approx(1.0)


def test_backbone_preset_returns_a_backbone(tiny_backbone_preset):
    model = presets.from_preset(tiny_backbone_preset)
    assert type(model) is MoEViTBackbone
    assert model.hidden_dim == 16


def test_overrides_are_routed_to_backbone_and_task():
    model = presets.from_preset(
        "moe_vit_tiny", load_weights=False, num_layers=2, num_experts=2, top_k=1,
        num_classes=4, dropout=0.1,
    )
    assert (model.backbone.num_layers, model.backbone.num_experts) == (2, 2)
    assert (model.num_classes, model.dropout) == (4, 0.1)


def test_class_from_preset_looks_in_the_registry(tiny_backbone_preset):
    backbone = MoEViTBackbone.from_preset("moe_vit_tiny", num_layers=2)
    assert type(backbone) is MoEViTBackbone and backbone.num_layers == 2
    model = MoEViTImageClassifier.from_preset(tiny_backbone_preset, num_classes=3)
    assert isinstance(model, MoEViTImageClassifier) and model.num_classes == 3
    assert model.preprocessor.image_converter.image_size == (8, 8)
    with pytest.raises(ValueError, match="num_classes"):
        MoEViTImageClassifier.from_preset(tiny_backbone_preset)


def test_classes_list_the_presets_they_can_build(tiny_backbone_preset):
    assert {"moe_vit_tiny", tiny_backbone_preset} | PAPER_PRESETS <= set(MoEViTBackbone.presets)
    assert {"moe_vit_tiny", tiny_backbone_preset} <= set(MoEViTImageClassifier.presets)
    assert MoEViTImageClassifier.presets["moe_vit_tiny"].task_cls is MoEViTImageClassifier


def test_dtype_override_and_mixed_precision_presets(tmp_path):
    model = presets.from_preset("moe_vit_tiny", **TINY_BACKBONE, dtype="mixed_bfloat16")
    assert model.backbone.dtype_policy.name == "mixed_bfloat16"
    assert model.backbone.sparse_moe_layers[0].dtype_policy.name == "mixed_bfloat16"
    path = presets.save_to_preset(model, tmp_path / "mixed")
    # As in keras-hub, a float preset loads in the current global policy...
    assert presets.from_preset(path).backbone.dtype_policy.name == "float32"
    # ...unless a dtype is given.
    restored = MoEViTImageClassifier.from_preset(path, dtype="mixed_bfloat16")
    assert restored.backbone.dtype_policy.name == "mixed_bfloat16"


def test_preset_classes_are_read_without_building(tmp_path, monkeypatch):
    from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
    from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive

    assert presets.preset_classes("limoe_tiny") == (LIMoEBackbone, MoEDualEncoderContrastive)
    assert presets.preset_classes("vmoe_s32_e8_k2_last2") == (MoEViTBackbone, None)
    path = presets.save_to_preset(tiny_classifier(), tmp_path / "classifier")

    def no_build(*args, **kwargs):
        raise AssertionError("preset_classes built the model")

    monkeypatch.setattr(MoETransformerEncoderBlock, "__init__", no_build)
    assert presets.preset_classes(path) == (MoEViTBackbone, MoEViTImageClassifier)
    with pytest.raises(ValueError, match="Unknown preset 'no_such_preset'"):
        presets.preset_classes("no_such_preset")


def test_unknown_preset_name_suggests_close_names():
    with pytest.raises(ValueError, match="list_presets") as info:
        presets.from_preset("moe_vit_tinny")
    assert "'moe_vit_tiny'" in str(info.value)
    with pytest.raises(ValueError, match="Unknown preset"):
        MoEViTBackbone.from_preset("vmoe_b16_e8_k2")


def test_unknown_override_is_rejected_with_suggestion():
    with pytest.raises(ValueError, match="num_experts") as info:
        presets.from_preset("moe_vit_tiny", num_expert=4)
    assert "Unknown override `num_expert`" in str(info.value)


def test_backbone_preset_rejects_task_overrides(tiny_backbone_preset):
    with pytest.raises(ValueError, match="num_classes"):
        presets.from_preset(tiny_backbone_preset, num_classes=3)


def test_conflicting_override_gives_a_clear_error():
    with pytest.raises(ValueError, match="moe_vit_tiny") as info:
        presets.from_preset("moe_vit_tiny", image_shape=(9, 9, 1))
    assert "image_shape=(9, 9, 1)" in str(info.value)
    assert "patch_size=4" in str(info.value)


def test_keras_hub_preset_names_go_to_keras_hub(monkeypatch):
    # A real keras-hub built-in name; its (network) loading is replaced below.
    name = "vit_base_patch16_224_imagenet"
    assert name in keras_hub.models.Backbone.presets
    calls = []

    def fake_from_preset(cls, preset, load_weights=True, **kwargs):
        calls.append((cls, preset, load_weights, kwargs))
        return "loaded by keras-hub"

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", classmethod(fake_from_preset))
    result = MoEViTBackbone.from_preset(name, load_weights=False)
    assert result == "loaded by keras-hub"
    assert calls == [(MoEViTBackbone, name, False, {})]


def test_wrong_model_class_is_rejected():
    from keras_sparse_moe.presets import PresetMixin

    class OtherBackbone(PresetMixin, keras.Model):
        pass

    with pytest.raises(ValueError, match="not a OtherBackbone"):
        OtherBackbone.from_preset("moe_vit_tiny")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "moe_vit_tiny"}, "already registered"),
        ({"name": "x", "backbone_cls": None}, "weights"),
        ({"name": "x", "family": ""}, "family"),
        ({"name": "x", "backbone_config": [1]}, "backbone_config"),
        ({"name": "x", "task_config": {"num_classes": 2}}, "task_cls"),
        ({"name": "x", "preprocessor": 3}, "preprocessor"),
    ],
)
def test_register_preset_validates(kwargs, match):
    arguments = {
        "family": "test",
        "description": "d",
        "backbone_cls": MoEViTBackbone,
        "backbone_config": TINY_BACKBONE,
        **kwargs,
    }
    name = arguments.pop("name")
    with pytest.raises(ValueError, match=match):
        presets.register_preset(name, **arguments)
    presets.unregister_preset("x")


# ------------------------------------------------------- saving and loading
def test_save_and_load_reproduces_outputs_exactly(tmp_path):
    model = tiny_classifier()
    x = images(3)
    expected = outputs(model, x)
    path = presets.save_to_preset(model, tmp_path / "tiny")
    assert {"config.json", "model.weights.h5", "metadata.json", "task.json",
            "task.weights.h5", "preprocessor.json"} <= set(os.listdir(path))
    with open(os.path.join(path, "metadata.json")) as handle:
        assert "keras_sparse_moe_version" in json.load(handle)

    restored = presets.from_preset(path)
    assert isinstance(restored, MoEViTImageClassifier)
    np.testing.assert_array_equal(outputs(restored, x), expected)

    backbone = MoEViTBackbone.from_preset(path)
    assert type(backbone) is MoEViTBackbone
    assert_same_weights(backbone, model.backbone)

    fresh = presets.from_preset(path, load_weights=False)
    assert not np.array_equal(outputs(fresh, x), expected)


def test_weight_preset_loads_shipped_weights(tmp_path, temporary_presets):
    model = tiny_classifier()
    path = presets.save_to_preset(model, tmp_path / "weights")
    temporary_presets(
        "test_tiny_weights", family="test", description="Tiny, with weights.", weights=path
    )
    (row,) = [r for r in presets.list_presets(family="test")]
    assert row["has_weights"] and row["task"] == "MoEViTImageClassifier"
    assert row["params_total"] == sum(
        int(np.prod(w.shape)) for w in model.backbone.trainable_weights
    )

    restored = MoEViTImageClassifier.from_preset("test_tiny_weights")
    assert_same_weights(restored, model)

    # A new head: the backbone weights load, the head starts fresh.
    relabelled = presets.from_preset("test_tiny_weights", num_classes=5)
    assert relabelled.num_classes == 5
    assert_same_weights(relabelled.backbone, model.backbone)

    with pytest.raises(ValueError, match="load_weights=False"):
        presets.from_preset("test_tiny_weights", num_experts=2)
    # An override the model refuses is its own error, not one about the weights.
    with pytest.raises(ValueError, match="num_experts") as info:
        presets.from_preset("test_tiny_weights", num_experts=0)
    assert "Cannot load the backbone weights" not in str(info.value)
    resized = presets.from_preset("test_tiny_weights", load_weights=False, num_experts=2)
    assert resized.backbone.num_experts == 2


def test_weight_preset_with_a_missing_directory_is_named(tmp_path, temporary_presets):
    missing = str(tmp_path / "gone")
    temporary_presets("test_missing_weights", family="test", description="d", weights=missing)
    with pytest.raises(FileNotFoundError, match="gone"):
        presets.from_preset("test_missing_weights")


def test_image_shape_override_updates_the_image_converter(tmp_path):
    model = tiny_classifier()
    path = presets.save_to_preset(model, tmp_path / "p")
    restored = presets.from_preset(path, load_weights=False, image_shape=(16, 16, 1))
    assert restored.backbone.image_shape == (16, 16, 1)
    assert restored.preprocessor.image_converter.image_size == (16, 16)


def test_backbone_only_directory_builds_a_classifier(tmp_path, tiny_backbone_preset):
    backbone = presets.from_preset(tiny_backbone_preset)
    path = presets.save_to_preset(backbone, tmp_path / "backbone")
    assert "task.json" not in os.listdir(path)
    loaded = presets.from_preset(path)
    assert type(loaded) is MoEViTBackbone
    model = MoEViTImageClassifier.from_preset(path, num_classes=2)
    assert model.preprocessor is None
    assert_same_weights(model.backbone, backbone)


def test_save_is_atomic_and_replaces_an_existing_preset(tmp_path, monkeypatch):
    model = tiny_classifier()
    target = tmp_path / "preset"
    presets.save_to_preset(model, target)
    presets.save_to_preset(model.backbone, target)  # replace: now backbone only
    assert "task.json" not in os.listdir(target)
    assert sorted(os.listdir(tmp_path)) == ["preset"]
    # Normal permissions (not the private ones of a temporary directory).
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask

    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(keras_hub.models.Backbone, "save_to_preset", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        presets.save_to_preset(model.backbone, target)
    assert sorted(os.listdir(tmp_path)) == ["preset"]  # no temp directory left
    assert "model.weights.h5" in os.listdir(target)  # old preset intact


def test_save_refuses_to_clobber_other_directories(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a preset"):
        presets.save_to_preset(presets.from_preset("moe_vit_tiny", **TINY_BACKBONE), other)
    with pytest.raises(ValueError, match="Backbone or keras_hub.models.Task"):
        presets.save_to_preset(keras.Sequential([keras.layers.Dense(1)]), tmp_path / "x")


def test_a_trained_model_is_saved_without_its_optimizer_state(tmp_path):
    import warnings

    import h5py

    model = tiny_classifier()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images(8)
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    assert model.optimizer.variables  # AdamW's moments, about twice the weights
    path = presets.save_to_preset(model, tmp_path / "trained")
    with h5py.File(os.path.join(path, "task.weights.h5"), "r") as weights:
        # No moments: at most the unbuilt optimizer's iteration count and learning rate.
        assert len(weights["optimizer"]["vars"]) <= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading for optimizer"
        restored = presets.from_preset(path)
    np.testing.assert_array_equal(outputs(restored, x), outputs(model, x))
    assert model.optimizer.variables and model.compiled  # the model itself is unchanged


def test_method_save_to_preset_is_atomic_too(tmp_path):
    model = tiny_classifier()
    model.save_to_preset(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert "task.json" in os.listdir(tmp_path / "m")


# ---------------------------------------------------------- broken presets
@pytest.fixture
def saved_preset(tmp_path):
    return presets.save_to_preset(tiny_classifier(), tmp_path / "saved")


def test_missing_config_is_named(saved_preset):
    os.remove(os.path.join(saved_preset, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        presets.from_preset(saved_preset)


@pytest.mark.parametrize("filename", ["config.json", "task.json", "preprocessor.json"])
def test_corrupt_json_is_named(saved_preset, filename):
    with open(os.path.join(saved_preset, filename), "w") as handle:
        handle.write("{not json")
    with pytest.raises(ValueError, match=filename):
        presets.from_preset(saved_preset)


def test_missing_weights_are_named(saved_preset):
    os.remove(os.path.join(saved_preset, "model.weights.h5"))
    with pytest.raises(FileNotFoundError, match="model.weights.h5"):
        presets.from_preset(saved_preset)
    assert isinstance(presets.from_preset(saved_preset, load_weights=False),
                      MoEViTImageClassifier)


@pytest.mark.parametrize("filename", ["model.weights.h5", "task.weights.h5"])
def test_corrupt_weights_are_named(saved_preset, filename):
    with open(os.path.join(saved_preset, filename), "wb") as handle:
        handle.write(b"garbage")
    with pytest.raises(ValueError, match=filename):
        presets.from_preset(saved_preset)


def test_preset_path_must_be_a_directory(tmp_path):
    path = tmp_path / "file.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        presets.from_preset(str(path))


def test_loading_uses_keras_safe_mode(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    directory = tmp_path / "unsafe"
    directory.mkdir()
    (directory / "config.json").write_text(
        json.dumps(keras.saving.serialize_keras_object(model))
    )
    with pytest.raises(ValueError, match="safe_mode"):
        presets.from_preset(str(directory), load_weights=False)
