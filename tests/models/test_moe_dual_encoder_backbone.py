"""LIMoE single-tower and MoE two-tower dual-encoder backbones."""

import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder import MoETextEncoder
from keras_sparse_moe.models.moe_dual_encoder import MoETwoTowerBackbone
from keras_sparse_moe.models.moe_vit import MoEViTBackbone
from tests.configs import LIMOE

CONFIG = dict(
    LIMOE,
    local_entropy_weight=0.01,
    global_entropy_weight={"text": 0.02},
    global_entropy_threshold=0.5,
)


def batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 6), "int32")
    mask[1:, 4:] = 0
    mask[-1, 2:] = 0
    return {
        "images": rng.random((n, 8, 8, 1)).astype("float32"),
        "token_ids": (rng.integers(4, 40, (n, 6)) * mask).astype("int32"),
        "padding_mask": mask,
    }


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return LIMoEBackbone(**CONFIG)


def test_forward_shapes_normalised_embeddings_and_logits(backbone):
    x = batch()
    out = backbone.predict(x, verbose=0)
    assert out["logits"].shape == (3, 3)
    assert out["image_embeddings"].shape == out["text_embeddings"].shape == (3, 6)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(np.linalg.norm(out[key], axis=-1), 1.0, rtol=1e-5)
    head = backbone.contrastive_head
    scale = float(keras.ops.convert_to_numpy(head.scale()))
    bias = float(keras.ops.convert_to_numpy(head.logit_bias))
    assert scale == pytest.approx(1 / 0.07, rel=1e-5) and bias == 0.0
    expected = scale * out["image_embeddings"] @ out["text_embeddings"].T + bias
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-4)
    assert backbone.moe_layer_indices == (1,)
    assert len(backbone.sparse_moe_layers) == 1  # one tower: the MoE is shared


def test_towers_are_separate_models_and_padding_is_ignored(backbone):
    x = batch()
    joint = backbone.predict(x, verbose=0)
    images = backbone.image_encoder.predict(x["images"], verbose=0)
    np.testing.assert_allclose(images, joint["image_embeddings"], rtol=1e-5, atol=1e-6)
    text_inputs = {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    texts = backbone.text_encoder.predict(text_inputs, verbose=0)
    np.testing.assert_allclose(texts, joint["text_embeddings"], rtol=1e-5, atol=1e-6)
    # Changing the ids under the padding does not change the text embedding.
    noisy = dict(text_inputs, token_ids=np.where(x["padding_mask"] == 1, x["token_ids"], 7))
    np.testing.assert_allclose(
        backbone.text_encoder.predict(noisy, verbose=0), texts, rtol=1e-5, atol=1e-6
    )
    # The shared blocks see both modalities with their own routing groups.
    assert backbone.image_encoder.get_layer("encoder_block_1") is (
        backbone.text_encoder.get_layer("encoder_block_1")
    )


def test_encode_methods_and_bad_inputs(backbone):
    x = batch(2)
    image_embeddings = keras.ops.convert_to_numpy(backbone.encode_image(x["images"]))
    assert image_embeddings.shape == (2, 6)
    with pytest.raises(ValueError, match=r"images.*\(batch, 8, 8, 1\)"):
        backbone.encode_image(np.zeros((2, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match=r"token_ids.*\(batch, 6\).*truncates"):
        backbone.encode_text(np.ones((2, 9), "int32"))
    with pytest.raises(ValueError, match="padding_mask"):
        backbone.encode_text(np.ones((2, 6), "int32"), np.ones((2, 5), "int32"))
    with pytest.raises(ValueError):
        backbone.predict(dict(x, images=np.zeros((2, 9, 9, 1), "float32")), verbose=0)


def test_config_and_keras_file_round_trip(backbone, tmp_path):
    config = backbone.get_config()
    clone = LIMoEBackbone.from_config(config)
    assert clone.get_config() == config
    path = os.path.join(tmp_path, "limoe.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, LIMoEBackbone)
    x = batch()
    np.testing.assert_allclose(
        restored.predict(x, verbose=0)["logits"],
        backbone.predict(x, verbose=0)["logits"],
        rtol=1e-4,
        atol=1e-4,
    )


def test_param_counts_match_built_model(backbone):
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    counts = LIMoEBackbone.param_counts_from_config(backbone.get_config())
    assert counts["total"] == trainable
    assert counts["active"] < counts["total"]


@pytest.mark.parametrize(
    "override, match",
    [
        ({"image_pooling": "cls"}, "image_pooling"),
        ({"text_pooling": "first"}, "text_pooling"),
        ({"num_heads": 3}, "hidden_dim"),
        ({"local_entropy_weight": {"audio": 0.1}}, "local_entropy_weight"),
        ({"global_entropy_threshold": -1.0}, "global_entropy_threshold"),
        ({"contrastive_loss": "triplet"}, "contrastive_loss"),
        ({"image_shape": (9, 9, 1)}, "patch"),
        ({"moe_layers": "every_x"}, "moe_layers"),
    ],
)
def test_argument_validation(override, match):
    with pytest.raises(ValueError, match=match):
        LIMoEBackbone(**{**CONFIG, **override})


def test_two_tower_backbone():
    keras.utils.set_random_seed(1)
    vision = MoEViTBackbone(
        image_shape=(8, 8, 1), patch_size=4, num_layers=2, num_heads=2, hidden_dim=8,
        mlp_dim=16, num_experts=4, top_k=1,
    )
    text = MoETextEncoder(
        vocabulary_size=40, max_sequence_length=6, num_layers=2, num_heads=2, hidden_dim=8,
        mlp_dim=16, num_experts=4, moe_layers="every_2", local_entropy_weight=0.01,
    )
    backbone = MoETwoTowerBackbone(vision, text, embedding_dim=5, contrastive_loss="sigmoid")
    out = backbone.predict(batch(), verbose=0)
    assert out["logits"].shape == (3, 3) and out["text_embeddings"].shape == (3, 5)
    np.testing.assert_allclose(np.linalg.norm(out["image_embeddings"], axis=-1), 1.0, rtol=1e-5)
    assert float(keras.ops.convert_to_numpy(backbone.contrastive_head.logit_bias)) == -10.0
    assert backbone.image_pooling == "token"
    assert len(backbone.sparse_moe_layers) == 2  # one per tower
    clone = MoETwoTowerBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    gap_vision = MoEViTBackbone.from_config({**vision.get_config(), "pooling": "gap"})
    with pytest.raises(ValueError, match="class token"):
        MoETwoTowerBackbone(gap_vision, text, image_pooling="token")
    with pytest.raises(ValueError, match="text_encoder"):
        MoETwoTowerBackbone(vision, vision)
