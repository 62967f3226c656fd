"""Contrastive losses, LIMoE entropy losses and the modality-shared block."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.models.moe_dual_encoder import ModalityEncoderBlock
from keras_sparse_moe.models.moe_dual_encoder import SigmoidContrastiveLoss
from keras_sparse_moe.models.moe_dual_encoder import SoftmaxContrastiveLoss
from keras_sparse_moe.models.moe_dual_encoder import global_entropy
from keras_sparse_moe.models.moe_dual_encoder import global_entropy_loss
from keras_sparse_moe.models.moe_dual_encoder import limoe_entropy_loss
from keras_sparse_moe.models.moe_dual_encoder import local_entropy
from keras_sparse_moe.models.moe_dual_encoder.contrastive_losses import get_contrastive_loss


def np_entropy(p):
    return -np.sum(p * np.log(np.maximum(p, 1e-9)), axis=-1)


def np_limoe(probs, mask, w_local, w_global, tau):
    p = probs.reshape(-1, probs.shape[-1])
    m = mask.reshape(-1).astype("float64")
    local = np.sum(np_entropy(p) * m) / m.sum()
    mean = (p * m[:, None]).sum(0) / m.sum()
    glob = -np_entropy(mean) if tau is None else max(0.0, tau - np_entropy(mean))
    return w_local * local + w_global * glob


def random_probs(rng, shape):
    logits = rng.normal(size=shape) * 2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def test_entropy_losses_match_numpy():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, (3, 5, 4))
    mask = (rng.random((3, 5)) > 0.3).astype("int32")
    mask[:, 0] = 1
    np.testing.assert_allclose(
        float(local_entropy(probs, mask)), np_limoe(probs, mask, 1.0, 0.0, None), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(global_entropy(probs, mask)), -np_limoe(probs, mask, 0.0, 1.0, None), rtol=1e-5
    )
    for tau in (None, 0.1, math.log(4.0)):
        expected = np_limoe(probs, mask, 0.3, 0.7, tau)
        got = float(limoe_entropy_loss(probs, mask, 0.3, 0.7, tau))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # Without a mask every token counts.
    ones = np.ones((3, 5), "int32")
    np.testing.assert_allclose(float(local_entropy(probs)), float(local_entropy(probs, ones)),
                               rtol=1e-6)


def test_entropy_extremes():
    one_hot = np.eye(4, dtype="float32")[[0, 1, 2, 3]]  # decisive, all experts used
    assert float(local_entropy(one_hot)) == pytest.approx(0.0, abs=1e-6)
    assert float(global_entropy(one_hot)) == pytest.approx(math.log(4), rel=1e-5)
    collapsed = np.eye(4, dtype="float32")[[2, 2, 2, 2]]
    # Hinge: no loss once the global entropy reaches the threshold.
    assert float(global_entropy_loss(one_hot, threshold=math.log(2))) == 0.0
    assert float(global_entropy_loss(collapsed, threshold=math.log(2))) == pytest.approx(
        math.log(2), rel=1e-5
    )


def np_softmax_loss(logits):
    def log_softmax(z, axis):
        z = z - z.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

    diag = np.arange(len(logits))
    rows = -log_softmax(logits, 1)[diag, diag]
    cols = -log_softmax(logits, 0)[diag, diag]
    return np.mean(0.5 * (rows + cols))


def np_sigmoid_loss(logits):
    z = 2 * np.eye(len(logits)) - 1
    return np.mean(np.sum(np.log1p(np.exp(-z * logits)), axis=1))


def test_contrastive_losses_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 5)).astype("float32") * 3
    eye = np.eye(5, dtype="float32")
    np.testing.assert_allclose(
        float(SoftmaxContrastiveLoss()(eye, logits)), np_softmax_loss(logits), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(SigmoidContrastiveLoss()(eye, logits)), np_sigmoid_loss(logits), rtol=1e-5
    )
    assert isinstance(get_contrastive_loss("sigmoid"), SigmoidContrastiveLoss)
    with pytest.raises(ValueError, match="contrastive_loss"):
        get_contrastive_loss("triplet")
    with pytest.raises(ValueError, match="square"):
        SoftmaxContrastiveLoss()(np.eye(3, 2, dtype="float32"), np.zeros((3, 2), "float32"))


def _block(**entropy):
    return ModalityEncoderBlock(
        num_heads=2,
        mlp_dim=8,
        moe={
            "num_experts": 4,
            "top_k": 1,
            "noise_std": 0.0,
            "importance_loss_weight": 0.0,
            "load_loss_weight": 0.0,
        },
        entropy_losses={"text": entropy},
    )


def test_block_adds_entropy_loss_of_its_routing_with_mask():
    rng = np.random.default_rng(2)
    block = _block(local=0.2, threshold=1.0, **{"global": 0.5})
    images = rng.normal(size=(2, 6, 8)).astype("float32")
    text = rng.normal(size=(2, 4, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], "int32")
    block(images, modality="image", training=True)  # builds on 6 tokens
    assert sum(float(ops.convert_to_numpy(v)) for v in block.losses) == pytest.approx(0.0)

    out = block(text, token_mask=mask, modality="text", training=True)
    assert tuple(out.shape) == (2, 4, 8)
    got = sum(float(ops.convert_to_numpy(v)) for v in block.losses)
    normed = block.norm1(text)
    h = ops.add(ops.convert_to_tensor(text), block.attention(normed, normed))
    probs = block.mlp.router(block.norm2(h), training=True, dense=False)["router_probs"]
    expected = np_limoe(ops.convert_to_numpy(probs), mask, 0.2, 0.5, 1.0)
    assert expected > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Routing groups follow each call: capacity of a 4-token group.
    assert block.mlp.capacity(True) == math.ceil(4 * 1.25 / 4)
    # No entropy loss at inference.
    block(text, token_mask=mask, modality="text")
    assert not block.losses


def test_block_config_round_trip_and_validation():
    block = _block(local=0.1)
    clone = ModalityEncoderBlock.from_config(block.get_config())
    assert clone.entropy_losses == {"text": {"local": 0.1, "global": 0.0, "threshold": None}}
    with pytest.raises(ValueError, match="entropy_losses"):
        ModalityEncoderBlock(2, 8, moe={"num_experts": 2}, entropy_losses={"text": {"lokal": 1}})
    with pytest.raises(ValueError, match="local"):
        ModalityEncoderBlock(2, 8, moe={"num_experts": 2}, entropy_losses={"text": {"local": -1}})
    keras.utils.set_random_seed(0)
    group_block = ModalityEncoderBlock(2, 8, moe={"num_experts": 2, "group_size": 4})
    group_block(np.zeros((1, 8, 8), "float32"))
    with pytest.raises(ValueError, match="group_size"):
        group_block(np.zeros((1, 6, 8), "float32"))
