"""MoEViTBackbone, MoEViTImageClassifier and their preprocessing."""

import json

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models import MoEViTImageConverter
from keras_sparse_moe.models.moe_vit import resolve_moe_layers
from keras_sparse_moe.models.moe_vit.moe_vit_presets import backbone_presets
from keras_sparse_moe.presets import list_presets
from tests.configs import MOE_VIT

TINY = MOE_VIT


def tiny(**overrides):
    return MoEViTBackbone(**{**TINY, **overrides})


def images(batch=4, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).random((batch,) + shape).astype("float32")


# The two `fit` tests check what a training step computes (gradients reaching
# the stem, the reported loss), not graph compilation: they run eagerly on
# TensorFlow and PyTorch, where tracing a train step costs far more than the
# step (graph-mode training is covered by tests/harness and tests/recipes).
# JAX keeps its jitted step.
EAGER = keras.backend.backend() != "jax"


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# ----------------------------------------------------------------- backbone
@pytest.mark.parametrize(
    "pooling, tokens", [("token", 5), ("gap", 4)], ids=["class_token", "gap"]
)
def test_backbone_outputs_token_sequence(pooling, tokens):
    backbone = tiny(pooling=pooling)
    assert tuple(backbone.output.shape) == (None, tokens, 16)
    assert backbone.num_tokens == tokens


def test_backbone_forward_is_finite():
    out = keras.ops.convert_to_numpy(tiny()(images(3)))
    assert out.shape == (3, 5, 16)
    assert np.all(np.isfinite(out))


def test_backbone_non_square_image_and_patch():
    backbone = tiny(image_shape=(12, 8, 3), patch_size=(4, 2))
    assert backbone.grid_size == (3, 4)
    assert tuple(backbone.output.shape) == (None, 13, 16)


def test_backbone_moe_blocks_follow_moe_layers():
    backbone = tiny(num_layers=4, moe_layers="every_2")
    assert backbone.moe_layer_indices == (1, 3)
    kinds = [block.is_moe for block in backbone.encoder_blocks]
    assert kinds == [False, True, False, True]
    assert all(isinstance(layer, SparseMoE) for layer in backbone.sparse_moe_layers)
    # Every expert weight lives under a path containing "experts".
    expert_paths = [w.path for w in backbone.weights if "experts" in w.path]
    assert expert_paths and all(p.startswith(("encoder_block_1/", "encoder_block_3/"))
                                for p in expert_paths)


def test_moe_layers_none_is_a_dense_vit():
    backbone = tiny(moe_layers="none")
    assert backbone.moe_layer_indices == ()
    assert not backbone.sparse_moe_layers


@pytest.mark.parametrize(
    "spec, num_layers, expected",
    [
        ("every_2", 12, (1, 3, 5, 7, 9, 11)),
        ("every_1", 3, (0, 1, 2)),
        ("every_3", 7, (2, 5)),
        ("last_2", 12, (9, 11)),
        ("last_2", 8, (5, 7)),
        ("last_1", 2, (1,)),
        ("all", 2, (0, 1)),
        ("none", 2, ()),
        ([6, 7, 8, 9, 10, 11], 12, (6, 7, 8, 9, 10, 11)),
        ([-1, 0], 4, (0, 3)),
        ((2,), 4, (2,)),
    ],
)
def test_moe_layers_grammar(spec, num_layers, expected):
    assert resolve_moe_layers(spec, num_layers) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("every_0", "every_N"),
        ("every_5", "selects no block"),
        ("last_3", "only 2"),
        ("first_2", "every_N"),
        ([0, 4], "bad entry 4"),
        ([1, 1], "twice"),
        ([True], "bad entry"),
        (3, "every_N"),
    ],
)
def test_moe_layers_rejects_bad_specs(spec, match):
    with pytest.raises(ValueError, match="moe_layers") as info:
        resolve_moe_layers(spec, 4)
    assert match in str(info.value)


def test_moe_kwargs_shared_and_per_block():
    backbone = tiny(
        num_layers=4,
        moe_kwargs={"group_size": 10, "gated": True, 3: {"num_experts": 2, "top_k": 1}},
    )
    first, last = backbone.sparse_moe_layers
    assert (first.num_experts, first.top_k, first.gated, first.group_size) == (4, 2, True, 10)
    assert (last.num_experts, last.top_k, last.gated, last.group_size) == (2, 1, True, 10)


def test_router_and_capacity_reach_every_moe_layer():
    backbone = tiny(router="expert_choice", capacity_factor=2.0, eval_capacity_factor=1.0)
    (moe,) = backbone.sparse_moe_layers
    assert (moe.router_type, moe.capacity_factor, moe.eval_capacity_factor) == (
        "expert_choice", 2.0, 1.0)


def test_stochastic_depth_increases_linearly():
    backbone = tiny(num_layers=3, stochastic_depth=0.2)
    rates = [block.stochastic_depth for block in backbone.encoder_blocks]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_shape": (9, 8, 1)}, r"image_shape=\(9, 8, 1\) and patch_size=4"),
        ({"image_shape": (8, 8)}, "image_shape"),
        ({"patch_size": 0}, "patch_size"),
        ({"hidden_dim": 15}, "num_heads"),
        ({"top_k": 5}, "top_k"),
        ({"router": "topk"}, "router"),
        ({"pooling": "cls"}, "pooling"),
        ({"capacity_factor": 0}, "capacity_factor"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"moe_kwargs": {"num_expert": 3}}, "num_expert"),
        ({"moe_kwargs": {"intermediate_dim": 3}}, "mlp_dim"),
        ({"moe_kwargs": {0: {"top_k": 1}}}, "not a MoE block"),
        ({"moe_kwargs": [1]}, "moe_kwargs"),
        ({"stem_channels": 8}, r"stem_channels=8"),
        ({"stem_channels": [8, 0]}, r"stem_channels=\[8, 0\]"),
        ({"stem_channels": [8, True]}, "stem_channels"),
        ({"stem_channels": [4, 4, 4]}, r"divisible by 2\*\*len\(stem_channels\) = 8.*at most 2"),
    ],
)
def test_backbone_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_backbone_config_round_trip_through_json():
    backbone = tiny(
        pooling="gap",
        num_layers=3,
        moe_layers=[0, 2],
        moe_kwargs={"noise_std": 0.5, 2: {"num_experts": 2}},
        dropout_rate=0.1,
        stem_channels=[4, 8],
    )
    config = json.loads(json.dumps(backbone.get_config()))
    restored = MoEViTBackbone.from_config(config)
    assert restored.get_config() == backbone.get_config()
    assert restored.moe_layer_indices == (0, 2)
    assert restored.sparse_moe_layers[1].num_experts == 2
    assert restored.stem_channels == [4, 8]
    assert trainable_count(restored) == trainable_count(backbone)


@pytest.mark.parametrize("stem_channels", [None, [6]], ids=["patchify", "stem"])
def test_param_counts_from_config_match_the_built_model(stem_channels):
    backbone = tiny(num_layers=4, moe_kwargs={"gated": True, 3: {"num_experts": 2}},
                    stem_channels=stem_channels)
    counts = MoEViTBackbone.param_counts_from_config(backbone.get_config())
    assert counts["total"] == trainable_count(backbone)
    assert 0 < counts["active"] < counts["total"]


# ------------------------------------------------------- convolutional stem
def _conv_same_stride2_gelu(x, kernel, bias):
    """NumPy reference: 3x3 convolution, stride 2, "same" padding as Keras
    defines it (the extra padding row/column goes after), then exact GELU."""
    from math import erf

    batch, height, width, _ = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    pad_h = max((out_h - 1) * 2 + 3 - height, 0)
    pad_w = max((out_w - 1) * 2 + 3 - width, 0)
    padded = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                        (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((batch, out_h, out_w, kernel.shape[-1]), "float64")
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            out[:, i, j] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2]))
    out += bias
    return 0.5 * out * (1 + np.vectorize(erf)(out / np.sqrt(2)))


def _embedding_model(backbone):
    layer = backbone.get_layer("patching_and_embedding")
    return keras.Model(backbone.input, layer.output)


def test_convolutional_stem_matches_numpy_reference():
    backbone = tiny(image_shape=(8, 12, 2), patch_size=(4, 4), stem_channels=[3, 5],
                    pooling="gap")
    assert backbone.grid_size == (2, 3) and backbone.num_tokens == 6
    assert tuple(backbone.output.shape) == (None, 6, 16)
    convs = [backbone.get_layer(f"stem_conv_{i}") for i in range(2)]
    assert [tuple(c.kernel.shape) for c in convs] == [(3, 3, 2, 3), (3, 3, 3, 5)]
    embedding = backbone.get_layer("patching_and_embedding")
    # Two halvings: the patch embedding is a 1x1 convolution over 5 channels.
    assert tuple(embedding.patch_embedding.kernel.shape) == (1, 1, 5, 16)

    x = images(2, (8, 12, 2))
    want = x.astype("float64")
    for conv in convs:
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in conv.weights)
        want = _conv_same_stride2_gelu(want, kernel, bias)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in embedding.patch_embedding.weights)
    tokens = want.reshape(2, 6, 5) @ kernel.reshape(5, 16) + bias
    positions = keras.ops.convert_to_numpy(embedding.position_embedding.embeddings)
    got = keras.ops.convert_to_numpy(_embedding_model(backbone)(x))
    np.testing.assert_allclose(got, tokens + positions, rtol=1e-4, atol=1e-5)


def test_stem_lets_a_token_see_neighbouring_patches():
    x = images(1, (8, 8, 1))
    moved = x.copy()
    moved[0, 0:4, 4, 0] += 1.0  # first pixel column of the top-right patch
    for stem_channels, changes_top_left in ((None, False), ([4], True)):
        model = _embedding_model(tiny(pooling="gap", stem_channels=stem_channels))
        before, after = (keras.ops.convert_to_numpy(model(v)) for v in (x, moved))
        changed = np.abs(after - before).max(axis=-1)[0] > 1e-6
        # Token 0 is the top-left patch, token 1 the top-right one.
        assert changed[1]
        assert changed[0] == changes_top_left


def test_stem_trains_and_round_trips_through_a_keras_file(tmp_path):
    model = classifier(tiny(pooling="gap", stem_channels=[4]))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=EAGER)
    x, y = images(8), np.arange(8) % 3
    before = [keras.ops.convert_to_numpy(w).copy()
              for w in model.backbone.get_layer("stem_conv_0").weights]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    after = [keras.ops.convert_to_numpy(w)
             for w in model.backbone.get_layer("stem_conv_0").weights]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))  # gradients reach it
    path = str(tmp_path / "stem.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.backbone.stem_channels == [4]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.slow
def test_vmoe_s32_preset_builds_and_runs():
    backbone = MoEViTBackbone(**backbone_presets["vmoe_s32_e8_k2_last2"]["config"])
    assert backbone.moe_layer_indices == (5, 7)
    (row,) = [r for r in list_presets() if r["name"] == "vmoe_s32_e8_k2_last2"]
    assert trainable_count(backbone) == row["params_total"]
    assert tuple(backbone.output.shape) == (None, 50, 512)


# --------------------------------------------------------------- classifier
def classifier(backbone=None, **kwargs):
    return MoEViTImageClassifier(backbone or tiny(), num_classes=3, **kwargs)


def test_pooling_reads_the_class_token_or_averages_the_patches():
    backbone = tiny()
    token_model = classifier(backbone)
    gap_model = classifier(backbone, pooling="gap")
    assert (token_model.pooling, gap_model.pooling) == ("token", "gap")
    x = images(2)
    tokens = keras.ops.convert_to_numpy(backbone(x))
    for model, pooled in ((token_model, tokens[:, 0]), (gap_model, tokens[:, 1:].mean(axis=1))):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.output_dense.weights)
        logits = keras.ops.convert_to_numpy(model(x))
        np.testing.assert_allclose(logits, pooled @ kernel + bias, rtol=1e-4, atol=1e-5)


def test_classifier_pooling_follows_the_backbone():
    assert classifier(tiny(pooling="gap")).pooling == "gap"


def test_classifier_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pooling='token'"):
        classifier(tiny(pooling="gap"), pooling="token")
    with pytest.raises(ValueError, match="num_classes"):
        MoEViTImageClassifier(tiny(), num_classes=0)
    with pytest.raises(ValueError, match="MoEViTBackbone"):
        MoEViTImageClassifier(keras.Sequential([keras.layers.Dense(2)]), num_classes=2)


def test_compile_defaults_and_overrides():
    model = classifier()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.loss.from_logits
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.SGD)


def test_fit_on_raw_images_reports_loss_with_auxiliary_moe_losses():
    backbone = tiny(moe_kwargs={"noise_std": 0.0})
    preprocessor = MoEViTImageClassifierPreprocessor.for_backbone(backbone, scale=1 / 16)
    model = MoEViTImageClassifier(backbone, num_classes=3, preprocessor=preprocessor)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss_fn, metrics=["accuracy"],
                  run_eagerly=EAGER)
    # Raw 16x16 "digits" with values 0..16; the preprocessor resizes to 8x8 and rescales.
    raw = np.random.default_rng(0).integers(0, 17, (4, 16, 16, 1)).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(raw, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    loss = history.history["loss"][0]
    logits = model(preprocessor(raw), training=True)
    # The learning rate is 0: fit's accuracy is that of the unchanged model.
    predicted = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    assert history.history["accuracy"][0] == pytest.approx(np.mean(predicted == y))
    cross_entropy = float(keras.ops.convert_to_numpy(loss_fn(y, logits)))
    aux = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    assert len(model.losses) == len(backbone.sparse_moe_layers)
    assert aux > 0
    np.testing.assert_allclose(loss, cross_entropy + aux, rtol=1e-4)


def test_keras_file_round_trip(tmp_path):
    model = classifier(tiny(pooling="gap", moe_kwargs={1: {"num_experts": 2}}))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    x = images(2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, MoEViTImageClassifier)
    assert restored.backbone.sparse_moe_layers[0].num_experts == 2
    assert isinstance(restored.optimizer, keras.optimizers.SGD)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )


# ------------------------------------------------------------ preprocessing
def test_preprocessor_resizes_and_rescales_raw_images():
    backbone = tiny(image_shape=(8, 8, 3))
    preprocessor = MoEViTImageClassifierPreprocessor.for_backbone(
        backbone, scale=1 / 127.5, offset=-1.0
    )
    assert isinstance(preprocessor.image_converter, MoEViTImageConverter)
    raw = np.full((2, 32, 32, 3), 255.0, "float32")
    out = keras.ops.convert_to_numpy(preprocessor(raw))
    assert out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_image_converter_config_round_trip():
    converter = MoEViTImageConverter(image_size=(8, 8), scale=[0.5, 0.25, 1.0], offset=-1.0)
    restored = MoEViTImageConverter.from_config(
        json.loads(json.dumps(converter.get_config()))
    )
    assert restored.image_size == (8, 8)
    assert list(restored.scale) == [0.5, 0.25, 1.0]
