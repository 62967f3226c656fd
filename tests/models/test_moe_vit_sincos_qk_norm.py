"""2-D sin-cos position embeddings and qk-normalised attention of
`MoEViTBackbone` (vmoe's `sincos2d` and `attention_qk_norm`): values
against NumPy, weights, parameter counts, config round trips and errors.
Parity with vmoe itself: tests/convert (the Soft MoE fixture models)."""

import math

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import QKNormMultiHeadAttention
from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit.moe_vit_sincos_embedding import (
    SinCos2DPatchingAndEmbedding,
)
from keras_sparse_moe.models.moe_vit.moe_vit_sincos_embedding import sincos2d_position_table
from tests.models.test_moe_vit_vmoe_options import numpy

TINY = dict(image_shape=(8, 12, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=8,
            mlp_dim=16, num_experts=4, top_k=1, moe_layers=[1])


def test_sincos2d_table_is_the_moco_v3_formula():
    height, width, dim = 3, 4, 16
    table = sincos2d_position_table(height, width, dim)
    assert table.dtype == np.float32 and table.shape == (height * width, dim)
    omega = 10_000.0 ** (-np.arange(dim // 4) / (dim // 4 - 1))
    for index in range(height * width):
        y, x = divmod(index, width)  # row-major patch order
        expected = np.concatenate([np.sin(x * omega), np.cos(x * omega),
                                   np.sin(y * omega), np.cos(y * omega)])
        np.testing.assert_allclose(table[index], expected, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="multiple of 4 and at least 8; received dim=6"):
        sincos2d_position_table(2, 2, 6)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_sincos2d_backbone_adds_the_table_to_the_patches(pooling):
    backbone = MoEViTBackbone(**TINY, pooling=pooling, position_embedding="sincos2d")
    embedding = backbone.get_layer("patching_and_embedding")
    assert isinstance(embedding, SinCos2DPatchingAndEmbedding)
    assert not [w for w in backbone.weights if "position" in w.path]
    images = np.random.RandomState(0).randn(2, 8, 12, 3).astype("float32")
    conv = embedding.patch_embedding
    patches = numpy(conv(images)).reshape(2, -1, 8)
    expected = patches + sincos2d_position_table(2, 3, 8)
    out = numpy(embedding(images))
    if pooling == "token":  # the class token gets no position embedding
        np.testing.assert_allclose(out[:, 0], np.broadcast_to(numpy(embedding.class_token)[0],
                                                              (2, 8)), atol=1e-6)
        out = out[:, 1:]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    config = backbone.get_config()
    assert config["position_embedding"] == "sincos2d"
    assert MoEViTBackbone.from_config(config).count_params() == backbone.count_params()
    layer = SinCos2DPatchingAndEmbedding.from_config(embedding.get_config())
    assert layer.temperature == 10_000.0 and layer.use_class_token == (pooling == "token")
    counts = MoEViTBackbone.param_counts_from_config(config)
    assert counts["total"] == sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)


def qk_norm_attention_reference(layer, query, value):
    """LayerNorm (scale only) of every head's projected q and k, then
    scaled dot-product attention, in NumPy from the layer's weights."""
    def project(x, dense):
        return np.einsum("btd,dhk->bthk", x, numpy(dense.kernel)) + numpy(dense.bias)

    def norm(x, ln):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + layer.qk_norm_epsilon) * numpy(ln.gamma)

    q = norm(project(query, layer._query_dense), layer.query_norm)
    k = norm(project(value, layer._key_dense), layer.key_norm)
    v = project(value, layer._value_dense)
    logits = np.einsum("bqhk,bthk->bhqt", q / math.sqrt(q.shape[-1]), k)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = np.einsum("bhqt,bthk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", x, numpy(layer._output_dense.kernel)) + numpy(
        layer._output_dense.bias)


def test_qk_norm_attention_matches_numpy_and_round_trips():
    rng = np.random.RandomState(1)
    query, value = rng.randn(2, 3, 8).astype("float32"), rng.randn(2, 5, 8).astype("float32")
    layer = QKNormMultiHeadAttention(num_heads=2, key_dim=4)
    layer(query, value)
    for index, weight in enumerate(layer.weights):
        weight.assign(np.random.RandomState(10 + index).randn(*weight.shape).astype("float32"))
    assert [tuple(w.shape) for w in (layer.query_norm.gamma, layer.key_norm.gamma)] == [(4,)] * 2
    np.testing.assert_allclose(numpy(layer(query, value)),
                               qk_norm_attention_reference(layer, query.astype("float64"),
                                                           value.astype("float64")),
                               atol=2e-5)
    clone = QKNormMultiHeadAttention.from_config(layer.get_config())
    clone(query, value)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(numpy(clone(query, value)), numpy(layer(query, value)))
    with pytest.raises(ValueError, match="qk_norm_epsilon.*> 0"):
        QKNormMultiHeadAttention(num_heads=2, key_dim=4, qk_norm_epsilon=0.0)


def test_qk_norm_backbone_and_map_head():
    backbone = MoEViTBackbone(**TINY, pooling="map", attention_qk_norm=True)
    model = MoEViTImageClassifier(backbone, num_classes=3)
    attentions = [block.attention for block in backbone.encoder_blocks]
    attentions.append(model.map_head.attention)
    assert all(isinstance(a, QKNormMultiHeadAttention) for a in attentions)
    config = backbone.get_config()
    assert config["attention_qk_norm"] is True
    assert model.map_head.get_config()["qk_norm"] is True
    counts = MoEViTBackbone.param_counts_from_config(config)
    assert counts["total"] == sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    plain = MoEViTBackbone(**TINY, pooling="map")
    assert counts["total"] - MoEViTBackbone.param_counts_from_config(
        plain.get_config())["total"] == 2 * 2 * 4  # two blocks, q and k scales (key_dim 4)
    images = np.random.RandomState(2).randn(2, 8, 12, 3).astype("float32")
    restored = MoEViTImageClassifier.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(restored(images)),
                               ops.convert_to_numpy(model(images)), atol=1e-6)


@pytest.mark.single_backend
def test_sincos2d_temperature_matches_vmoe():
    # vmoe's own test (vmoe/nn/vit_moe_test.py, test_position_embedding_sincos2d):
    # a 2x2 grid, width 8, temperature 1, so every frequency is 1.
    s, c = math.sin(1), math.cos(1)
    vmoe = np.array([[0, 0, 1, 1, 0, 0, 1, 1], [s, s, c, c, 0, 0, 1, 1],
                     [0, 0, 1, 1, s, s, c, c], [s, s, c, c, s, s, c, c]], "float32")
    config = dict(TINY, image_shape=(8, 8, 3), pooling="gap", position_embedding="sincos2d",
                  position_embedding_temperature=1.0)
    backbone = MoEViTBackbone(**config)
    embedding = backbone.get_layer("patching_and_embedding")
    images = np.random.RandomState(0).randn(2, 8, 8, 3).astype("float32")
    patches = numpy(embedding.patch_embedding(images)).reshape(2, -1, 8)
    np.testing.assert_allclose(numpy(embedding(images)) - patches,
                               np.broadcast_to(vmoe, (2, 4, 8)), atol=1e-6)
    restored = MoEViTBackbone.from_config(backbone.get_config())
    assert restored.position_embedding_temperature == 1.0
    np.testing.assert_allclose(
        restored.get_layer("patching_and_embedding").position_table, vmoe, atol=1e-6)
    assert MoEViTBackbone(**dict(config, position_embedding_temperature=10_000.0)).get_layer(
        "patching_and_embedding").temperature == 10_000.0


def test_bad_position_and_qk_norm_arguments():
    with pytest.raises(ValueError, match="position_embedding_temperature.*0.0"):
        MoEViTBackbone(**TINY, position_embedding="sincos2d", position_embedding_temperature=0)
    with pytest.raises(ValueError, match="sincos2d' only.*temperature=5.0.*'learned'"):
        MoEViTBackbone(**TINY, position_embedding_temperature=5)
    with pytest.raises(ValueError, match="position_embedding.*'rope'"):
        MoEViTBackbone(**TINY, position_embedding="rope")
    with pytest.raises(ValueError, match="sincos2d.*multiple of 4.*hidden_dim=6"):
        MoEViTBackbone(**{**TINY, "hidden_dim": 6, "num_heads": 1},
                       position_embedding="sincos2d")
    with pytest.raises(ValueError, match="attention_qk_norm.*True or False.*'yes'"):
        MoEViTBackbone(**TINY, attention_qk_norm="yes")
