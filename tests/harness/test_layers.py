"""keras-hub's layer harness (`run_layer_test`) on every layer: config and
serialization round trips, build from shapes, symbolic and eager calls with
the expected shapes and dtypes, weight counts, one compiled training step
and, where every sublayer follows the dtype policy, mixed precision.

Behaviour (routing against the NumPy reference, gradients, capacity, ...)
is tested in tests/layers and tests/models; this file checks the keras-hub
layer contract with the small configs of tests/configs.py."""

import keras
import numpy as np
from absl.testing import parameterized
from keras_hub.src.tests.test_case import TestCase

from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import MoETransformerEncoderBlock
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import StochasticDepth
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.models.moe_dual_encoder import ClassEmbeddings
from keras_sparse_moe.models.moe_dual_encoder import ContrastiveHead
from keras_sparse_moe.models.moe_dual_encoder import ModalityEmbedding
from keras_sparse_moe.models.moe_dual_encoder import ModalityEncoderBlock
from keras_sparse_moe.models.moe_dual_encoder import TokenPooling
from tests import configs

X = configs.sparse_moe_inputs()
# The routers take grouped tokens (groups, group_size, dim).
GROUPS = X.reshape(4, 4, X.shape[-1])
TOKENS = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")


class SparseMoETest(TestCase):
    @parameterized.named_parameters(
        # router kernel + 2 expert kernels + 2 biases (+ the soft router's
        # normalisation scale); non-trainable: dropped / expert fraction
        # (+ the token-choice noise seed).
        ("token_choice", {"router": "token_choice"}, 5, 3),
        ("token_choice_dropless", {"router": "token_choice", "capacity_factor": None}, 5, 3),
        ("token_choice_gated", {"router": "token_choice", "gated": True}, 6, 3),
        ("expert_choice", {"router": "expert_choice"}, 5, 2),
        ("soft", {"router": "soft", "slots_per_expert": 2}, 6, 2),
    )
    def test_layer(self, kwargs, trainable, non_trainable_variables):
        self.run_layer_test(
            cls=SparseMoE,
            init_kwargs={**configs.SPARSE_MOE, **kwargs},
            input_data=X,
            expected_output_shape=X.shape,
            expected_num_trainable_weights=trainable,
            expected_num_non_trainable_weights=2,
            expected_num_non_trainable_variables=non_trainable_variables,
            # The router computes in float32 under any policy by design
            # (tests/layers/test_mixed_precision.py checks the layer's dtypes).
            run_precision_checks=False,
        )


class ExpertsTest(TestCase):
    @parameterized.named_parameters(("plain", False, 4), ("gated", True, 5))
    def test_layer(self, gated, trainable):
        # A backend tensor: the precision check calls compute_output_spec on it.
        x = keras.ops.convert_to_tensor(
            np.random.default_rng(2).normal(size=(4, 6, 12)).astype("float32")
        )
        self.run_layer_test(
            cls=Experts,
            init_kwargs={**configs.EXPERTS, "gated": gated},
            input_data=x,
            expected_output_shape=x.shape,
            expected_num_trainable_weights=trainable,
        )


def shapes(structure):
    return keras.tree.map_structure(lambda value: tuple(value.shape), structure)


class RouterTest(TestCase):
    def _run(self, cls, init_kwargs, expected_output_shape, trainable=1, seed_variables=0):
        self.run_layer_test(
            cls=cls,
            init_kwargs=init_kwargs,
            input_data=GROUPS,
            expected_output_shape=expected_output_shape,
            expected_num_trainable_weights=trainable,
            expected_num_non_trainable_variables=seed_variables,
            # The routing dict holds integer indices: nothing to fit with MSE.
            run_training_check=False,
            # Routers compute in float32 under any policy by design.
            run_precision_checks=False,
        )

    def test_token_choice(self):
        groups, size, experts, top_k = 4, 4, 4, 2
        router = TokenChoiceRouter(num_experts=experts, top_k=top_k, capacity_factor=1.0)
        out = router(GROUPS)
        capacity = 2  # ceil(group size 4 * top-2 * factor 1.0 / 4 experts)
        self._run(
            TokenChoiceRouter,
            {"num_experts": experts, "top_k": top_k, "capacity_factor": 1.0},
            shapes(out),
            seed_variables=1,
        )
        self.assertEqual(tuple(out["combine_weights"].shape), (groups, size, experts, capacity))
        self.assertEqual(tuple(out["expert_index"].shape), (groups, size, top_k))

    def test_expert_choice(self):
        router = ExpertChoiceRouter(num_experts=4, top_k=1, capacity_factor=1.0)
        out = router(GROUPS)
        self._run(
            ExpertChoiceRouter,
            {"num_experts": 4, "top_k": 1, "capacity_factor": 1.0},
            shapes(out),
        )
        self.assertEqual(tuple(out["combine_weights"].shape), (4, 4, 4, 1))

    def test_soft(self):
        router = SoftRouter(num_experts=4, slots_per_expert=2)
        out = router(GROUPS)
        self._run(
            SoftRouter,
            {"num_experts": 4, "slots_per_expert": 2},
            shapes(out),
            trainable=2,
        )
        # (groups, group size, experts, slots per expert)
        self.assertEqual(tuple(out["dispatch_weights"].shape), (4, 4, 4, 2))


class EncoderBlockTest(TestCase):
    def test_moe_block(self):
        self.run_layer_test(
            cls=MoETransformerEncoderBlock,
            init_kwargs=configs.ENCODER_BLOCK,
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=TOKENS.shape,
            # 2 layer norms (2 each), attention (4 kernels, 4 biases), SparseMoE (5).
            expected_num_trainable_weights=17,
            expected_num_non_trainable_weights=2,
            expected_num_non_trainable_variables=4,  # + noise and drop-path seeds
            run_precision_checks=False,  # float32 router, see SparseMoETest
        )

    def test_dense_block(self):
        self.run_layer_test(
            cls=MoETransformerEncoderBlock,
            init_kwargs={**configs.ENCODER_BLOCK, "moe": None},
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=TOKENS.shape,
            expected_num_trainable_weights=16,  # + Dense in/out (2 each)
            expected_num_non_trainable_variables=1,  # drop-path seed
        )

    def test_modality_block(self):
        self.run_layer_test(
            cls=ModalityEncoderBlock,
            init_kwargs={
                **configs.ENCODER_BLOCK,
                "entropy_losses": {"text": {"local": 0.01, "global": 0.01}},
            },
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=TOKENS.shape,
            expected_num_trainable_weights=17,
            expected_num_non_trainable_weights=2,
            expected_num_non_trainable_variables=4,
            run_precision_checks=False,
        )

    def test_stochastic_depth(self):
        self.run_layer_test(
            cls=StochasticDepth,
            init_kwargs={"rate": 0.5, "seed": 0},
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=TOKENS.shape,
            # Identity at inference: the eager call returns its input.
            expected_output_data=TOKENS,
            expected_num_non_trainable_variables=1,
        )


class DualEncoderLayersTest(TestCase):
    def test_modality_embedding(self):
        self.run_layer_test(
            cls=ModalityEmbedding,
            init_kwargs={},
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=TOKENS.shape,
            expected_num_trainable_weights=1,
        )

    @parameterized.named_parameters(
        ("first", "first", TOKENS[:, 0]),
        ("mean", "mean", TOKENS.mean(1)),
        ("last", "last", TOKENS[:, -1]),
    )
    def test_token_pooling(self, mode, expected):
        self.run_layer_test(
            cls=TokenPooling,
            init_kwargs={"mode": mode},
            input_data=keras.ops.convert_to_tensor(TOKENS),
            expected_output_shape=(2, 8),
            expected_output_data=expected,
        )

    def test_token_pooling_with_padding_mask(self):
        mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "int32")
        self.run_layer_test(
            cls=TokenPooling,
            init_kwargs={"mode": "last"},
            input_data={
                "inputs": keras.ops.convert_to_tensor(TOKENS),
                "padding_mask": keras.ops.convert_to_tensor(mask),
            },
            expected_output_shape=(2, 8),
            expected_output_data=np.stack([TOKENS[0, 2], TOKENS[1, 4]]),
        )

    def test_contrastive_head(self):
        rng = np.random.default_rng(3)
        image, text = rng.normal(size=(2, 3, 6)).astype("float32")
        self.run_layer_test(
            cls=ContrastiveHead,
            init_kwargs={"logit_scale_init": 10.0, "logit_bias_init": -10.0},
            input_data={
                "image_embeddings": keras.ops.convert_to_tensor(image),
                "text_embeddings": keras.ops.convert_to_tensor(text),
            },
            expected_output_shape=(3, 3),
            expected_output_data=10.0 * image @ text.T - 10.0,
            expected_num_trainable_weights=2,  # log-temperature and bias
            # The logits are computed in float32 under any policy by design.
            run_precision_checks=False,
        )

    def test_contrastive_head_output_spec_is_its_float32_logits(self):
        head = ContrastiveHead(dtype="mixed_float16")
        image = keras.KerasTensor((3, 6), dtype="float16")
        text = keras.KerasTensor((4, 6), dtype="float16")
        spec = head.compute_output_spec(image, text)
        head.build((3, 6), (4, 6))
        logits = head(np.ones((3, 6), "float16"), np.ones((4, 6), "float16"))
        assert (spec.shape, spec.dtype) == ((3, 4), "float32")
        assert keras.backend.standardize_dtype(logits.dtype) == spec.dtype

    def test_class_embeddings(self):
        self.run_layer_test(
            cls=ClassEmbeddings,
            init_kwargs={"num_classes": 3, "embedding_dim": 6},
            input_data=keras.ops.convert_to_tensor(np.zeros((2, 6), "float32")),
            expected_output_shape=(3, 6),
            expected_num_non_trainable_weights=1,  # the fixed class table
            expected_num_non_trainable_variables=1,
            run_training_check=False,  # nothing trainable
            run_precision_checks=False,  # test_class_embeddings_precision
        )

    def test_class_embeddings_precision(self):
        self.run_precision_test(
            ClassEmbeddings,
            {"num_classes": 3, "embedding_dim": 6},
            keras.ops.convert_to_tensor(np.zeros((2, 6), "float32")),
        )
