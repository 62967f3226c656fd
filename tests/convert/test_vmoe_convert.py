"""`convert_vmoe` on the vmoe fixture checkpoints (tests/fixtures/vmoe/,
written by vmoe's own code, see tools/README.md): logits and auxiliary
losses against vmoe's (V-MoE token / expert choice and Soft MoE), and
one-line errors for bad inputs."""

import json
import os
import shutil

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.convert import CheckpointError
from keras_sparse_moe.convert import build_classifier
from keras_sparse_moe.convert import convert_vmoe
from keras_sparse_moe.convert import read_checkpoint
from keras_sparse_moe.models.moe_vit.moe_vit_sincos_embedding import sincos2d_position_table

MODELS = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vmoe", "models")
# (model, a variant that drops tokens, one that does not); bf16 variants are
# not reproduced (the conversion is float32 throughout).
CASES = [
    ("vmoe_token", "tc_k2_cf0.5_bp", "tc_k2_cf2"),
    ("vmoe_gap_repr", "tc_k2_cf1", "tc_k2_cf2"),
    ("vmoe_map", "tc_k1_cf1", "tc_k1_cf4"),
]


def model_dir(name):
    return os.path.join(MODELS, name)


def variants(name):
    with open(os.path.join(model_dir(name), "variants.json")) as f:
        return json.load(f)


def check_variant(model, name, variant, config):
    io = np.load(os.path.join(model_dir(name), "io.npz"))
    logits = ops.convert_to_numpy(model(io["images"], training=False))
    np.testing.assert_allclose(logits, io[f"{variant}/logits"], rtol=0, atol=1e-5)
    router = config["encoder"]["moe"]["router"]
    weights = {"importance_loss": router.get("importance_loss_weight", 1.0),
               "load_balancing_loss": router.get("gshard_loss_weight", 0.0)}
    tokens = model.backbone.num_tokens
    total = 0.0
    for index, layer in zip(model.backbone.moe_layer_indices, model.backbone.sparse_moe_layers):
        block = f"encoderblock_{index}"
        inputs = io[f"{variant}/{block}/moe_inputs"].reshape(-1, tokens, model.backbone.hidden_dim)
        stats = layer.routing_stats(inputs)
        for ours, theirs in (("importance_loss", "importance_loss"),
                             ("load_balancing_loss", "gshard_loss")):
            np.testing.assert_allclose(stats["aux_losses"][ours],
                                       np.mean(io[f"{variant}/metric/{block}/{theirs}"]),
                                       rtol=1e-6, atol=1e-6)
        assert "load_loss" not in stats["aux_losses"]  # eval: vmoe has none
        total += sum(w * stats["aux_losses"][k] for k, w in weights.items())
    np.testing.assert_allclose(total, np.mean(io[f"{variant}/metric/auxiliary_loss"]),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,dropping,keeping", CASES)
def test_converted_models_match_vmoe(tmp_path, name, dropping, keeping):
    configs = variants(name)
    output = tmp_path / "preset"
    # The sharded checkpoint with the config.json beside it (the first variant).
    model = convert_vmoe(os.path.join(model_dir(name), "params.index"), output)
    with open(os.path.join(model_dir(name), "config.json")) as f:
        check_variant(model, name, next(iter(configs)), json.load(f))
    assert os.path.isfile(output / "config.json")
    params, _ = read_checkpoint(model_dir(name))
    for variant in (dropping, keeping):
        check_variant(build_classifier(params, configs[variant]), name, variant, configs[variant])


def test_preset_directory_loads_back(tmp_path):
    from keras_sparse_moe.presets import from_preset

    name = "vmoe_token"
    model = convert_vmoe(os.path.join(model_dir(name), "params.msgpack"), tmp_path / "p")
    loaded = from_preset(str(tmp_path / "p"))
    images = np.load(os.path.join(model_dir(name), "io.npz"))["images"]
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images, training=False)),
                               ops.convert_to_numpy(model(images, training=False)), atol=1e-6)


def test_both_formats_read_the_same_params():
    sharded, _ = read_checkpoint(os.path.join(model_dir("vmoe_token"), "params"))
    flat, _ = read_checkpoint(os.path.join(model_dir("vmoe_token"), "params.msgpack"))
    with open(os.path.join(model_dir("vmoe_token"), "tree.json")) as f:
        tree = json.load(f)
    assert set(sharded) == set(flat) == set(tree)
    for key, (shape, dtype) in tree.items():
        assert list(sharded[key].shape) == shape and str(sharded[key].dtype) == dtype
        np.testing.assert_array_equal(sharded[key], flat[key])


def copy_checkpoint(tmp_path, name="vmoe_token"):
    target = tmp_path / name
    shutil.copytree(model_dir(name), target)
    return target


def expect_error(match, *args, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        convert_vmoe(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_missing_and_truncated_shards(tmp_path):
    source = copy_checkpoint(tmp_path)
    os.remove(source / "params.msgpack")
    shard = source / "params.data-00001-of-00002"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    expect_error("truncated", source / "params.index", tmp_path / "out")
    os.remove(shard)
    expect_error("Missing data shard.*00001-of-00002", source / "params", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_not_a_checkpoint_and_output_is_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error("not a checkpoint directory", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    expect_error("is a file", model_dir("vmoe_token"), tmp_path / "file")
    (tmp_path / "junk.msgpack").write_bytes(b"\xc1\xc1\xc1")
    expect_error("not a readable msgpack", tmp_path / "junk.msgpack", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_bad_trees():
    params, _ = read_checkpoint(model_dir("vmoe_token"))
    extra = dict(params, **{"Encoder/encoderblock_0/extra/kernel": np.zeros((2, 3), "float32")})
    with pytest.raises(CheckpointError, match=r"no place.*extra/kernel \(2, 3\)"):
        build_classifier(extra)
    partial = dict(params)
    del partial["Encoder/encoderblock_1/Mlp/Dense_1/bias"]
    with pytest.raises(CheckpointError, match="lacks 'Encoder/encoderblock_1/Mlp/Dense_1/bias'"):
        build_classifier(partial)
    wrong = dict(params, **{"Encoder/encoderblock_1/LayerNorm_0/scale": np.ones(7, "float32")})
    with pytest.raises(CheckpointError, match=r"LayerNorm_0/scale' has shape \(7,\)"):
        build_classifier(wrong)
    nan = dict(params)
    nan["head/bias"] = np.full_like(params["head/bias"], np.nan)
    with pytest.raises(CheckpointError, match="'head/bias' holds non-finite"):
        build_classifier(nan)
    with pytest.raises(CheckpointError, match="not a V-MoE"):
        build_classifier({"foo/bar": np.zeros(3, "float32")})


# vmoe's Soft MoE (VisionTransformerMoe + vmoe.projects.soft_moe SoftRouter,
# qk-normalised attention): GAP with learned position embeddings and 4x4
# slots (capacity factor 1); MAP with sincos2d and 8x1 slots (num_slots=1);
# class token with sincos2d and 4x4 slots mixing both images' tokens (one
# group of 2 x 17, capacity factor 0.5).
SOFT_CASES = [("soft_moe_gap", "params.msgpack", None), ("soft_moe_map", "params.index", 16),
              ("soft_moe_token", "params", 16)]


@pytest.mark.parametrize("name,checkpoint,image_size", SOFT_CASES)
def test_converted_soft_moe_matches_vmoe(tmp_path, name, checkpoint, image_size):
    (variant, config), = variants(name).items()
    model = convert_vmoe(os.path.join(model_dir(name), checkpoint), tmp_path / "preset",
                         image_size=image_size)
    backbone = model.backbone
    assert backbone.attention_qk_norm and backbone.router == "soft"
    assert backbone.position_embedding == ("learned" if image_size is None else "sincos2d")
    io = np.load(os.path.join(model_dir(name), "io.npz"))
    logits = ops.convert_to_numpy(model(io["images"], training=False))
    np.testing.assert_allclose(logits, io[f"{variant}/logits"], rtol=0, atol=1e-5)
    for index, layer in zip(backbone.moe_layer_indices, backbone.sparse_moe_layers):
        block = f"{variant}/encoderblock_{index}"
        inputs = io[f"{block}/moe_inputs"]  # (G, S, D), vmoe's groups
        routing = layer.router(inputs, training=False, dense=False)
        for key in ("dispatch", "combine"):
            np.testing.assert_allclose(ops.convert_to_numpy(routing[f"{key}_weights"]),
                                       io[f"{block}/{key}"], rtol=0, atol=1e-6)
        # vmoe's Soft MoE has no auxiliary loss (0); neither has the converted one.
        assert float(ops.convert_to_numpy(routing["aux_loss"])) == float(
            io[f"{variant}/metric/{'encoderblock_%d' % index}/auxiliary_loss"].mean()) == 0.0
    assert float(io[f"{variant}/metric/auxiliary_loss"].mean()) == 0.0
    if image_size is not None:  # the preset keeps sincos2d, qk-norm and the bf16 rounding
        from keras_sparse_moe.presets import from_preset

        loaded = from_preset(str(tmp_path / "preset"))
        np.testing.assert_allclose(ops.convert_to_numpy(loaded(io["images"], training=False)),
                                   io[f"{variant}/logits"], rtol=0, atol=1e-5)
    # vmoe rounds the Soft MoE data to bfloat16; without that the logits miss 1e-5.
    for layer in backbone.sparse_moe_layers:
        assert layer.router.bfloat16_dispatch
        layer.router.bfloat16_dispatch = False
    float32 = ops.convert_to_numpy(model(io["images"], training=False))
    assert np.abs(float32 - io[f"{variant}/logits"]).max() > 1e-5


@pytest.mark.single_backend
def test_soft_moe_errors():
    params, _ = read_checkpoint(model_dir("soft_moe_map"))
    config = variants("soft_moe_map")["soft_slots1"]
    with pytest.raises(CheckpointError, match="no learned position embedding.*image_size"):
        build_classifier(params, config)
    with pytest.raises(CheckpointError, match=r"image_size \(18, 18\) is not divisible"):
        build_classifier(params, config, image_size=18)
    moe = config["encoder"]["moe"]
    wrong = dict(config, encoder=dict(config["encoder"], moe=dict(
        moe, router=dict(moe["router"], num_slots=2))))
    with pytest.raises(CheckpointError, match="num_slots=2.*1 slots per expert"):
        build_classifier(params, wrong, image_size=16)
    expert_choice = variants("vmoe_token")["ec_cf1"]["encoder"]["moe"]["router"]
    with pytest.raises(CheckpointError, match="does not match the checkpoint.*Soft MoE"):
        build_classifier(params, dict(config, encoder=dict(config["encoder"], moe=dict(
            moe, router=expert_choice))), image_size=16)
    with pytest.raises(CheckpointError, match="Position embedding 'none'.*not convertible"):
        build_classifier(params, dict(config, encoder=dict(
            config["encoder"], position_emb={"name": "none"})), image_size=16)
    noisy = build_classifier(params, dict(config, encoder=dict(config["encoder"], moe=dict(
        moe, router=dict(moe["router"], noise_std=0.3)))), image_size=16)
    assert [layer.router.noise_std for layer in noisy.backbone.sparse_moe_layers] == [0.3] * len(
        noisy.backbone.sparse_moe_layers)
    # vmoe's sincos2d temperature (`position_emb.temperature`) is kept.
    model = build_classifier(params, dict(config, encoder=dict(
        config["encoder"], position_emb={"name": "sincos2d", "temperature": 100.0})),
        image_size=16)
    assert model.backbone.position_embedding_temperature == 100.0
    embedding = model.backbone.get_layer("patching_and_embedding")
    grid, dim = model.backbone.grid_size, model.backbone.hidden_dim
    np.testing.assert_array_equal(embedding.position_table,
                                  sincos2d_position_table(*grid, dim, temperature=100.0))
    with pytest.raises(CheckpointError, match="sincos2d temperature -1.0 is not a positive"):
        build_classifier(params, dict(config, encoder=dict(
            config["encoder"], position_emb={"name": "sincos2d", "temperature": -1.0})),
            image_size=16)
    learned, _ = read_checkpoint(model_dir("soft_moe_gap"))
    gap = variants("soft_moe_gap")["soft_cf1"]
    with pytest.raises(CheckpointError, match=r"gives 64 patches.*has 16"):
        build_classifier(learned, gap, image_size=32)
    with pytest.raises(CheckpointError, match="config has sincos2d.*holds a learned table"):
        build_classifier(learned, dict(gap, encoder=dict(
            gap["encoder"], position_emb={"name": "sincos2d"})))


def test_mismatched_preset(tmp_path):
    expect_error("does not match preset 'moe_vit_tiny'.*hidden_dim", model_dir("vmoe_token"),
                 tmp_path / "out", preset="moe_vit_tiny")
    assert not os.path.exists(tmp_path / "out")


def test_cli_convert(tmp_path, capsys):
    from keras_sparse_moe.cli import main

    assert main(["convert", "vmoe", os.path.join(model_dir("vmoe_map"), "params"),
                 "--output", str(tmp_path / "map")]) == 0
    assert os.path.isfile(tmp_path / "map" / "config.json")
    assert main(["convert", "vmoe", str(tmp_path), "--output", str(tmp_path / "x")]) != 0
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert main(["convert", "vmoe", model_dir("soft_moe_map"), "--image-size", "16",
                 "--output", str(tmp_path / "soft")]) == 0
    with open(tmp_path / "soft" / "config.json") as f:  # the backbone's
        backbone = json.load(f)["config"]
    assert backbone["position_embedding"] == "sincos2d" and backbone["router"] == "soft"
