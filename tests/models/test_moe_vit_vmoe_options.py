"""V-MoE model options: MAP pooling, pre-logits representation, MLP
activation (tanh GELU); values against NumPy and config round trips."""

import math

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit.moe_vit_map_head import MoEViTMAPHead


def numpy(x):
    return ops.convert_to_numpy(x).astype("float64")


def layer_norm(x, layer, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * numpy(layer.gamma) + numpy(layer.beta)


def tanh_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def map_head_reference(head, tokens):
    """vmoe's MapHead in NumPy from the layer's weights."""
    attention = head.attention
    q_kernel, q_bias = numpy(attention._query_dense.kernel), numpy(attention._query_dense.bias)
    k_kernel, k_bias = numpy(attention._key_dense.kernel), numpy(attention._key_dense.bias)
    v_kernel, v_bias = numpy(attention._value_dense.kernel), numpy(attention._value_dense.bias)
    o_kernel, o_bias = numpy(attention._output_dense.kernel), numpy(attention._output_dense.bias)
    probe = np.broadcast_to(numpy(head.probe), (tokens.shape[0], 1, tokens.shape[2]))
    q = np.einsum("bqd,dhk->bqhk", probe, q_kernel) + q_bias
    k = np.einsum("btd,dhk->bthk", tokens, k_kernel) + k_bias
    v = np.einsum("btd,dhk->bthk", tokens, v_kernel) + v_bias
    logits = np.einsum("bqhk,bthk->bhqt", q / math.sqrt(q.shape[-1]), k)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = np.einsum("bhqt,bthk->bqhk", weights, v)
    x = np.einsum("bqhk,hkd->bqd", x, o_kernel) + o_bias
    y = layer_norm(x, head.norm, head.layer_norm_epsilon)
    y = tanh_gelu(y @ numpy(head.mlp_in.kernel) + numpy(head.mlp_in.bias))
    y = y @ numpy(head.mlp_out.kernel) + numpy(head.mlp_out.bias)
    return (x + y)[:, 0]


def test_map_head_matches_numpy_and_round_trips():
    head = MoEViTMAPHead(num_heads=2, mlp_dim=6, activation="gelu_approximate")
    tokens = np.random.RandomState(0).randn(3, 5, 4).astype("float32")
    head(tokens)
    for index, weight in enumerate(head.weights):  # non-trivial biases
        weight.assign(np.random.RandomState(index).randn(*weight.shape).astype("float32") * 0.5)
    out = numpy(head(tokens))
    np.testing.assert_allclose(out, map_head_reference(head, tokens.astype("float64")),
                               atol=1e-5)
    clone = MoEViTMAPHead.from_config(head.get_config())
    clone.build(tokens.shape)
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(numpy(clone(tokens)), out, atol=1e-6)


def small_backbone(**kwargs):
    args = dict(image_shape=(8, 8, 3), patch_size=4, num_layers=2, num_heads=2,
                hidden_dim=8, mlp_dim=16, num_experts=4, top_k=2)
    args.update(kwargs)
    return MoEViTBackbone(**args)


def test_classifier_with_map_pooling_and_representation():
    backbone = small_backbone(pooling="map", mlp_activation="gelu_approximate")
    assert backbone.num_tokens == 4  # no class token
    classifier = MoEViTImageClassifier(backbone, num_classes=5, representation_size=6)
    images = np.random.RandomState(1).rand(2, 8, 8, 3).astype("float32")
    logits = numpy(classifier(images))
    tokens = numpy(backbone(images))
    pooled = map_head_reference(classifier.map_head, tokens)
    pre_logits = np.tanh(pooled @ numpy(classifier.pre_logits.kernel)
                         + numpy(classifier.pre_logits.bias))
    expected = pre_logits @ numpy(classifier.output_dense.kernel) + numpy(
        classifier.output_dense.bias)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    config = classifier.get_config()
    assert config["representation_size"] == 6 and config["pooling"] == "map"
    clone = MoEViTImageClassifier.from_config(config)
    clone.set_weights(classifier.get_weights())
    np.testing.assert_allclose(numpy(clone(images)), logits, atol=1e-6)
    assert clone.backbone.mlp_activation == "gelu_approximate"


def test_mlp_activation_selects_the_gelu_form():
    images = np.random.RandomState(2).rand(2, 8, 8, 3).astype("float32")
    exact = small_backbone(pooling="gap")
    approximate = small_backbone(pooling="gap", mlp_activation="gelu_approximate")
    approximate.set_weights(exact.get_weights())
    difference = np.abs(numpy(exact(images)) - numpy(approximate(images))).max()
    assert 0 < difference < 1e-2
    block = approximate.get_layer("encoder_block_1")
    assert block.mlp.experts.activation.__name__ == "gelu_approximate"


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="representation_size"):
        MoEViTImageClassifier(small_backbone(), num_classes=3, representation_size=0)
    with pytest.raises(ValueError, match="mlp_activation"):
        small_backbone(mlp_activation="gelux")
