"""keras_sparse_moe.profile: parameter and FLOP counts of MoE models."""

import json
import os
import runpy

import keras
import numpy as np
import pytest
from keras_hub.models import ViTBackbone

from keras_sparse_moe import SparseMoE
from keras_sparse_moe import presets
from keras_sparse_moe.layers.encoder_block import MoETransformerEncoderBlock
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.profile import ModelProfile
from keras_sparse_moe.profile import profile
from keras_sparse_moe.profile import config_profiler
from keras_sparse_moe.profile import profile_config
from keras_sparse_moe.profile import register_config_profiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(
    image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=32,
    mlp_dim=64, num_experts=4, top_k=2, moe_layers="every_2",
)


def weight_count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def without_name(result):
    data = result.to_dict()
    data.pop("name")
    return data


# ------------------------------------------------------- independent counts
def vit_dense_counts(image, patch, channels, layers, dim, mlp, class_token=True):
    """ViT parameters and forward FLOPs per example, written out by hand."""
    patches = (image // patch) ** 2
    tokens = patches + int(class_token)
    params = (
        patch * patch * channels * dim + dim  # patch conv kernel + bias
        + tokens * dim  # position embeddings
        + (dim if class_token else 0)  # class token
        + layers * (
            2 * 2 * dim  # two LayerNorms
            + 4 * dim * dim + 4 * dim  # q, k, v, out projections with biases
            + dim * mlp + mlp + mlp * dim + dim  # MLP
        )
        + 2 * dim  # final LayerNorm
    )
    flops = 2 * patches * patch * patch * channels * dim + layers * (
        2 * tokens * 4 * dim * dim  # projections
        + 2 * 2 * tokens * tokens * dim  # QK^T and AV over all heads
        + 2 * tokens * 2 * dim * mlp  # MLP
    )
    return params, flops


def test_tiny_moe_vit_matches_hand_count():
    model = MoEViTBackbone(**TINY)
    result = profile(model)
    dim, mlp, experts, tokens = 32, 64, 4, 17
    dense_params, dense_flops = vit_dense_counts(16, 4, 3, 2, dim, mlp)
    expert = dim * mlp + mlp + mlp * dim + dim
    router = dim * experts
    capacity = int(np.ceil(tokens * 2 * 1.25 / experts))  # 11
    assert result.params_total == dense_params - expert + router + experts * expert
    assert result.params_total == weight_count(model.trainable_weights)
    assert result.params_total + result.params_non_trainable == model.count_params()
    assert result.params_active == dense_params + router + expert  # top-2: one extra MLP
    moe_flops = 2 * tokens * dim * experts + 2 * experts * capacity * 2 * dim * mlp
    assert result.flops == dense_flops - 2 * tokens * 2 * dim * mlp + moe_flops
    assert result.flops_train == result.flops  # same capacity factor
    [moe] = result.moe_layers
    assert (moe.name, moe.router, moe.num_experts, moe.top_k) == (
        "encoder_block_1/moe", "token_choice", 4, 2)
    assert (moe.group_size, moe.capacity_train, moe.capacity_eval) == (17, 11, 11)
    assert moe.params == router + experts * expert
    assert moe.flops == moe_flops
    assert result.uncounted_layers == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"router": "expert_choice", "capacity_factor": 2.0, "eval_capacity_factor": 1.0},
        {"router": "soft", "moe_kwargs": {"slots_per_expert": 2}},
        {"moe_kwargs": {"group_size": 34, "gated": True}, "moe_layers": "all",
         "eval_capacity_factor": 2.0},
        {"capacity_factor": None, "pooling": "gap", "num_layers": 3,
         "moe_kwargs": {2: {"num_experts": 2, "top_k": 1}}, "moe_layers": [0, 2]},
        {"stem_channels": [8, 12]},
        {"stem_channels": [8], "patch_size": (4, 2), "image_shape": (12, 10, 3),
         "pooling": "gap"},
    ],
    ids=["expert_choice", "soft", "groups_gated", "dropless_gap_per_block", "stem",
         "stem_odd_grid"],
)
def test_profile_config_equals_profile(overrides):
    config = {**TINY, **overrides}
    model = MoEViTBackbone(**config)
    measured = profile(model)
    assert without_name(profile_config(MoEViTBackbone, config)) == without_name(measured)
    assert measured.params_total == weight_count(model.trainable_weights)


def test_stem_counts_by_hand():
    """A two-convolution stem on 16x16x3: 8x8 then 4x4 positions, and the
    patch embedding becomes a 1x1 convolution over the stem's channels."""
    plain = profile_config(MoEViTBackbone, TINY)
    stem = profile_config(MoEViTBackbone, {**TINY, "stem_channels": [8, 12]})
    conv_params = (9 * 3 * 8 + 8) + (9 * 8 * 12 + 12)
    conv_flops = 2 * 64 * 9 * 3 * 8 + 2 * 16 * 9 * 8 * 12
    patch_kernel_change = 12 * 32 - 4 * 4 * 3 * 32  # 1x1x12 instead of 4x4x3
    assert stem.params_total - plain.params_total == conv_params + patch_kernel_change
    assert stem.params_active - plain.params_active == conv_params + patch_kernel_change
    assert stem.flops - plain.flops == conv_flops + 2 * 16 * patch_kernel_change


def test_active_parameter_conventions():
    config = {**TINY, "moe_layers": "all", "num_layers": 1}
    soft = profile_config(MoEViTBackbone, {**config, "router": "soft"})
    [layer] = soft.moe_layers
    assert layer.experts_per_token == 4  # every expert touches every token
    assert soft.params_active == soft.params_total
    choice = profile_config(
        MoEViTBackbone, {**config, "router": "expert_choice", "capacity_factor": 1.0})
    [layer] = choice.moe_layers
    # 4 experts x ceil(17 * 2 / 4) = 9 slots over 17 tokens.
    assert layer.experts_per_token == pytest.approx(4 * 9 / 17)
    assert layer.params_active == layer.params_router + round(4 * 9 / 17 * layer.params_per_expert)


def test_eval_capacity_sets_inference_flops():
    config = {**TINY, "capacity_factor": 2.0, "eval_capacity_factor": 1.0}
    result = profile_config(MoEViTBackbone, config)
    [moe] = result.moe_layers
    assert (moe.capacity_train, moe.capacity_eval) == (17, 9)
    expert_slot = 2 * 2 * 32 * 64
    assert moe.flops_train - moe.flops == 4 * (17 - 9) * expert_slot
    assert result.flops_train - result.flops == moe.flops_train - moe.flops


def test_keras_hub_vit_profile_matches_config():
    model = ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, use_mha_bias=False,
    )
    measured = profile(model)
    params, flops = vit_dense_counts(16, 4, 3, 2, 32, 64)
    assert measured.params_total == params - 2 * 4 * 32 == model.count_params()
    assert measured.flops == flops
    assert measured.moe_layers == []
    assert without_name(profile_config(ViTBackbone, model.get_config())) == without_name(measured)


def test_profile_config_asks_the_class_not_its_identity(monkeypatch):
    # A subclass inherits the analytic profile: nothing is built.
    @keras.saving.register_keras_serializable(package="test_profile")
    class WiderViT(MoEViTBackbone):
        pass

    def no_build(*args, **kwargs):
        raise AssertionError("profile_config built the model")

    expected = profile_config(MoEViTBackbone, TINY)
    monkeypatch.setattr(MoETransformerEncoderBlock, "__init__", no_build)
    assert without_name(profile_config(WiderViT, TINY)) == without_name(expected)
    assert profile_config(WiderViT, TINY).name == "WiderViT"


def test_registered_config_profiler_is_used_for_its_class():
    class Foreign(keras.Model):
        """Stands for a class of another library that cannot get a method."""

    seen = []

    def profiler(cls, config):
        seen.append((cls, config))
        return profile_config(MoEViTBackbone, config)

    register_config_profiler(Foreign, profiler)
    result = profile_config(Foreign, TINY)
    assert seen == [(Foreign, TINY)]
    assert result.params_total == profile(MoEViTBackbone(**TINY)).params_total
    with pytest.raises(ValueError, match="profiler"):
        register_config_profiler(Foreign, "not callable")
    with pytest.raises(ValueError, match="backbone_cls"):
        register_config_profiler("Foreign", profiler)


def test_classes_without_a_profiler_are_built_and_profiled():
    class Dense(keras.Model):
        def __init__(self, units=3, **kwargs):
            inputs = keras.Input((5,))
            super().__init__(inputs, keras.layers.Dense(units)(inputs), **kwargs)

    assert config_profiler(Dense) is None
    result = profile_config(Dense, {"units": 4})
    assert (result.params_total, result.flops) == (5 * 4 + 4, 2 * 5 * 4)


# ----------------------------------------------------------- paper sizes
VIT_B16 = dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12,
               hidden_dim=768, mlp_dim=3072)


def test_vit_b16_and_vmoe_b16_counts():
    dense_params, dense_flops = vit_dense_counts(224, 16, 3, 12, 768, 3072)
    assert dense_params == 85_798_656  # ViT-B/16 without a head (~86M)
    dense = profile_config(ViTBackbone, VIT_B16)
    assert (dense.params_total, dense.flops) == (dense_params, dense_flops)

    spec = presets.get_preset("vmoe_b16_e8_k2_every2")
    moe = profile_config(spec.backbone_cls, spec.backbone_config)
    expert = 2 * 768 * 3072 + 3072 + 768
    router = 768 * 8
    assert moe.params_total == dense_params + 6 * (7 * expert + router)
    assert moe.params_active == dense_params + 6 * (expert + router)  # top-2
    # vmoe's routing: groups of 8 images (8 x 197 tokens), capacity factor
    # 1.05, ceil, up to a multiple of 4 (414 -> 416 slots per expert).
    group = 8 * 197
    capacity = int(np.ceil(group * 2 * 1.05 / 8))
    capacity += -capacity % 4
    extra_slots = (8 * capacity - group) / 8  # per image
    assert moe.flops == dense_flops + 6 * (
        2 * 197 * 768 * 8 + extra_slots * 2 * 2 * 768 * 3072
    )
    expected_names = [f"encoder_block_{i}/moe" for i in (1, 3, 5, 7, 9, 11)]
    assert [m.name for m in moe.moe_layers] == expected_names
    # The registry's own parameter count agrees.
    [row] = [r for r in presets.list_presets(family="moe_vit") if r["name"] == spec.name]
    assert moe.params_total == row["params_total"]


# --------------------------------------------------------- generic models
class Wrapper(keras.layers.Layer):
    """A custom layer hiding a SparseMoE one level down."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = SparseMoE(num_experts=4, intermediate_dim=8, top_k=1, group_size=12,
                               router="expert_choice", capacity_factor=1.0,
                               name="inner_moe")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x, training=None):
        return self.inner(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_profile_any_functional_model_with_nested_moe():
    inputs = keras.Input((6, 5))
    x = keras.layers.Dense(16, name="proj")(inputs)
    x = Wrapper(name="wrapper")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    result = profile(model)
    expert = 16 * 8 + 8 + 8 * 16 + 16
    assert result.params_total == weight_count(model.trainable_weights)
    [moe] = result.moe_layers
    assert moe.name == "wrapper/inner_moe"
    # Groups of 12 tokens span two examples; capacity ceil(12 * 1 * 1.0 / 4) = 3.
    assert (moe.group_size, moe.capacity_eval) == (12, 3)
    assert moe.experts_per_token == pytest.approx(4 * 3 / 12)
    assert result.params_active == result.params_total - 4 * expert + expert
    per_example_moe = (2 * 6 * 16 * 4 + 2 * 4 * 3 * 2 * 16 * 8 / 2)
    expected = 2 * 6 * 5 * 16 + per_example_moe + 2 * 96 * 3
    assert result.flops == round(expected)
    assert moe.flops == round(per_example_moe)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 2, strides=2)
        self.moe = SparseMoE(num_experts=2, intermediate_dim=4, top_k=1)

    def call(self, x, training=None):
        x = self.conv(x)
        x = keras.ops.reshape(x, (-1, 4, 8))
        return self.moe(x, training=training)


def test_profile_subclassed_model_needs_input_shape():
    model = Subclassed()
    with pytest.raises(ValueError, match="input_shape"):
        profile(model)
    result = profile(model, input_shape=(4, 4, 3))
    assert result.input_shape == (4, 4, 3)
    assert result.params_total == weight_count(model.trainable_weights)
    [moe] = result.moe_layers
    conv_flops = 2 * 4 * (2 * 2 * 3 * 8)
    moe_flops = 2 * 4 * 8 * 2 + 2 * 2 * moe.capacity_eval * 2 * 8 * 4
    assert result.flops == conv_flops + moe_flops


def test_profile_result_prints_and_serialises():
    result = profile(MoEViTBackbone(**TINY))
    assert isinstance(result, ModelProfile)
    text = str(result)
    assert "encoder_block_1/moe" in text and "parameters active / token" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params_total"] == result.params_total
    assert data["moe_layers"][0]["capacity_eval"] == 11
    assert result.gflops == pytest.approx(result.flops / 1e9)


def test_profile_rejects_bad_input():
    with pytest.raises(ValueError, match="keras.Model"):
        profile("not a model")
    with pytest.raises(ValueError, match="backbone_cls"):
        profile_config("MoEViTBackbone", {})
    with pytest.raises(ValueError, match="unknown MoEViTBackbone arguments"):
        profile_config(MoEViTBackbone, {**TINY, "num_expert": 3})
    with pytest.raises(ValueError, match="image_shape"):
        profile_config(MoEViTBackbone, {**TINY, "image_shape": (15, 16, 3)})


def test_profile_presets_script_prints_moe_vit_table(capsys):
    script = runpy.run_path(os.path.join(ROOT, "benchmarks", "profile_presets.py"))
    script["main"](["--family", "moe_vit"])
    table = capsys.readouterr().out
    for row in presets.list_presets(family="moe_vit", params=False):
        if presets.get_preset(row["name"]).backbone_cls is None:
            continue  # shipped-weights presets share their base preset's row
        assert f"`{row['name']}`" in table
    assert "| `vmoe_b16_e8_k2_every2` | 284.18M | 114.17M |" in table
    assert "6 (blocks 1, 3, 5, 7, 9, 11): token_choice, E=8, k=2, C=416/416" in table


def test_shared_moe_layer_counts_every_call():
    moe = SparseMoE(num_experts=2, intermediate_dim=4, top_k=1, group_size=4,
                    capacity_factor=1.0, name="shared_moe")
    long_input, short_input = keras.Input((8, 6), name="long"), keras.Input((4, 6), name="short")
    model = keras.Model([long_input, short_input], [moe(long_input), moe(short_input)])
    result = profile(model)
    [layer] = result.moe_layers
    assert (layer.group_size, layer.capacity_eval) == (4, 2)
    # 12 tokens per example in groups of 4: router 2*12*6*2, experts 3 groups * 2 * 2 slots.
    expected = 2 * 12 * 6 * 2 + 2 * 3 * 2 * 2 * (6 * 4 + 4 * 6)
    assert result.flops == layer.flops == expected


def test_profile_a_single_moe_layer():
    inputs = keras.Input((16, 32))
    moe = SparseMoE(num_experts=8, intermediate_dim=64, top_k=2, name="moe")
    keras.Model(inputs, moe(inputs))
    result = profile(moe)  # input shape read from the functional graph it is in
    [layer] = result.moe_layers
    assert layer.name == "moe" and result.params_total == layer.params
    standalone = SparseMoE(num_experts=8, intermediate_dim=64, top_k=2)
    assert profile(standalone, input_shape=(16, 32)).flops == result.flops


@pytest.mark.parametrize("dropless_impl", ["padded", "auto"])
def test_dropless_layer_flops_follow_the_path_it_runs(dropless_impl):
    # 16 tokens, 8 experts, top-2, model width 32, MLP 64: one expert row
    # costs 2 * (32 * 64 + 64 * 32) FLOPs; the router 2 * 16 * 32 * 8.
    moe = SparseMoE(num_experts=8, intermediate_dim=64, top_k=2, capacity_factor=None,
                    dropless_impl=dropless_impl)
    result = profile(moe, input_shape=(16, 32))
    [layer] = result.moe_layers
    row, router = 2 * 2 * 32 * 64, 2 * 16 * 32 * 8
    if moe.uses_ragged_experts():  # JAX / PyTorch with "auto": top_k rows per token
        expert_rows = 16 * 2
    else:  # every expert gets the whole group
        expert_rows = 8 * 16
    assert layer.capacity_eval == layer.capacity_train == 16
    assert result.flops == layer.flops == router + expert_rows * row
    assert layer.flops_train == layer.flops
    assert layer.experts_per_token == 2
