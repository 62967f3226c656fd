"""keras-hub's backbone harness (`run_backbone_test`, `run_model_saving_test`)
on every backbone: serialization round trip, eager call and compiled
`predict` (arrays and a `tf.data` dataset) with the expected output shapes,
the name, the dtypes under mixed_float16 and bfloat16,
int8/float8 quantization of the Dense/EinsumDense layers, and a `.keras`
save and load with equal outputs.

The precision check is keras-hub's with the routers (and the dual encoders'
`logits`) checked to be float32, as they are by design (tests/harness/precision.py)."""

import keras
import numpy as np
import pytest

from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
from keras_sparse_moe.models.moe_dual_encoder import MoETextEncoder
from keras_sparse_moe.models.moe_dual_encoder import MoETwoTowerBackbone
from tests import configs
from tests.harness.precision import FloatRouterTestCase

# Even, so that the harness's tf.data batches of 2 hold square (2, 2) logits.
BATCH = 4


def dual_encoder_outputs(embedding_dim):
    return {
        "image_embeddings": (BATCH, embedding_dim),
        "text_embeddings": (BATCH, embedding_dim),
        "logits": (BATCH, BATCH),
    }


class MoEViTBackboneTest(FloatRouterTestCase):
    def setUp(self):
        super().setUp()
        self.input_data = configs.images(BATCH, configs.MOE_VIT["image_shape"])

    def test_backbone_basics(self):
        self.run_backbone_test(
            cls=MoEViTBackbone,
            init_kwargs=configs.MOE_VIT,
            input_data=self.input_data,
            # 2x2 patches and the class token, width 16.
            expected_output_shape=(BATCH, 5, configs.MOE_VIT["hidden_dim"]),
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=MoEViTBackbone,
            init_kwargs={**configs.MOE_VIT, "pooling": "gap", "stem_channels": [4]},
            input_data=self.input_data,
        )


class MoETextEncoderTest(FloatRouterTestCase):
    def test_backbone_basics(self):
        data = configs.tokens(BATCH)
        self.run_backbone_test(
            cls=MoETextEncoder,
            init_kwargs=configs.TEXT_ENCODER,
            input_data=data,
            expected_output_shape=(
                BATCH, configs.SEQUENCE_LENGTH, configs.TEXT_ENCODER["hidden_dim"]
            ),
            # The sequence length is fixed (static expert capacity).
            variable_length_data=[data],
        )


@pytest.mark.single_backend
def test_text_encoder_reads_a_quantization_map_with_unprefixed_names():
    """A quantized MoETextEncoder saved when its layers were named
    `encoder_block_{i}` (no `text_` prefix) loads quantized, with its weights."""
    encoder = MoETextEncoder(**configs.TEXT_ENCODER)
    encoder.quantize("int8")
    config = encoder.get_config()
    policies = config["dtype"]["config"]["policy_map"]
    old_policies = {key.removeprefix("text_") if key.startswith("text_encoder_block_") else key:
                    value for key, value in policies.items()}
    assert "encoder_block_0/mlp_in" in old_policies
    config["dtype"] = {**config["dtype"], "config": {**config["dtype"]["config"],
                                                     "policy_map": old_policies}}
    revived = MoETextEncoder.from_config(config)
    layer = revived.get_layer("text_encoder_block_0").mlp_in
    assert layer.quantization_mode == "int8"
    revived.set_weights(encoder.get_weights())
    data = configs.tokens(BATCH)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(revived(data)),
                               keras.ops.convert_to_numpy(encoder(data)), atol=1e-6)


class LIMoEBackboneTest(FloatRouterTestCase):
    float32_outputs = ("logits",)

    def setUp(self):
        super().setUp()
        self.input_data = configs.image_text_batch(BATCH)

    def test_backbone_basics(self):
        self.run_backbone_test(
            cls=LIMoEBackbone,
            init_kwargs=configs.LIMOE,
            input_data=self.input_data,
            expected_output_shape=dual_encoder_outputs(configs.LIMOE["embedding_dim"]),
            variable_length_data=[self.input_data],
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=LIMoEBackbone,
            init_kwargs={
                **configs.LIMOE,
                "contrastive_loss": "sigmoid",
                "local_entropy_weight": 0.01,
                "global_entropy_weight": {"text": 0.02},
                "global_entropy_threshold": 0.5,
            },
            input_data=self.input_data,
        )


def two_tower_kwargs():
    return {
        "vision_encoder": MoEViTBackbone(**configs.TWO_TOWER_VISION),
        "text_encoder": MoETextEncoder(**configs.TEXT_ENCODER),
        "embedding_dim": configs.TWO_TOWER_EMBEDDING_DIM,
    }


class MoETwoTowerBackboneTest(FloatRouterTestCase):
    float32_outputs = ("logits",)

    def setUp(self):
        super().setUp()
        self.input_data = configs.image_text_batch(BATCH)

    def test_backbone_basics(self):
        # Quantization included: the towers' layers have distinct paths
        # (MoETextEncoder's are `text_`-prefixed), which one DTypePolicyMap
        # addresses.
        self.run_backbone_test(
            cls=MoETwoTowerBackbone,
            init_kwargs=two_tower_kwargs(),
            input_data=self.input_data,
            expected_output_shape=dual_encoder_outputs(configs.TWO_TOWER_EMBEDDING_DIM),
            variable_length_data=[self.input_data],
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=MoETwoTowerBackbone,
            init_kwargs=two_tower_kwargs(),
            input_data=self.input_data,
        )
