"""vmoe's expert dropout placement (`dropout_placement="vmoe"`) and vmoe's
routing groups: `group_size` consecutive tokens of the flattened batch, also
when it neither divides nor is a multiple of the tokens per example."""

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import MoETransformerEncoderBlock
from keras_sparse_moe.layers import SparseMoE


def constant_output_experts(placement, rate=0.5):
    """Experts whose output is exactly 1 everywhere before output dropout."""
    experts = Experts(num_experts=2, intermediate_dim=4, dropout=rate,
                      dropout_placement=placement)
    experts.build((2, None, 3))
    experts.kernel_out.assign(np.zeros((2, 4, 3), "float32"))
    experts.bias_out.assign(np.ones((2, 3), "float32"))
    return experts


def test_vmoe_placement_drops_each_expert_output():
    x = np.random.default_rng(0).random((2, 64, 3), dtype=np.float32)
    vmoe = ops.convert_to_numpy(constant_output_experts("vmoe")(x, training=True))
    # Each slot's output is dropped (0) or kept and rescaled (1 / 0.5).
    assert set(np.unique(vmoe)) == {0.0, 2.0}
    assert 0.3 < np.mean(vmoe == 0.0) < 0.7
    hidden = ops.convert_to_numpy(constant_output_experts("hidden")(x, training=True))
    np.testing.assert_array_equal(hidden, np.ones_like(hidden))  # only the hidden layer
    for placement in ("vmoe", "hidden"):  # inference: no dropout anywhere
        out = ops.convert_to_numpy(constant_output_experts(placement)(x, training=False))
        np.testing.assert_array_equal(out, np.ones_like(out))


def block(placement):
    """A MoE block with dropout 0.5 whose attention branch outputs zeros and
    whose routing is deterministic: in training only dropout can differ."""
    layer = MoETransformerEncoderBlock(
        num_heads=2, mlp_dim=8, dropout_rate=0.5,
        moe={"num_experts": 4, "top_k": 2, "noise_std": 0.0, "capacity_factor": 2.0,
             "dropout": 0.0, "dropout_placement": placement})
    layer.build((2, 5, 8))
    for weight in (layer.attention._output_dense.kernel, layer.attention._output_dense.bias):
        weight.assign(np.zeros(weight.shape, "float32"))
    return layer


def test_block_adds_no_dropout_after_a_vmoe_placed_moe():
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    vmoe = block("vmoe")
    np.testing.assert_allclose(ops.convert_to_numpy(vmoe(x, training=True)),
                               ops.convert_to_numpy(vmoe(x, training=False)), atol=1e-6)
    hidden = block("hidden")  # the block's own dropout on the MoE output
    assert not np.allclose(ops.convert_to_numpy(hidden(x, training=True)),
                           ops.convert_to_numpy(hidden(x, training=False)), atol=1e-3)


@pytest.mark.single_backend
def test_dropout_placement_round_trips_and_is_validated():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, dropout=0.2, dropout_placement="vmoe")
    config = moe.get_config()
    assert config["dropout_placement"] == "vmoe"
    clone = SparseMoE.from_config(config)
    assert clone.experts.dropout_placement == "vmoe"
    assert Experts.from_config(clone.experts.get_config()).dropout_placement == "vmoe"
    layer = MoETransformerEncoderBlock.from_config(block("vmoe").get_config())
    assert layer.moe["dropout_placement"] == "vmoe"
    assert SparseMoE(num_experts=4, intermediate_dim=8).get_config()["dropout_placement"] == (
        "hidden")  # the default keeps the former behaviour
    with pytest.raises(ValueError, match=r"dropout_placement.*\['hidden', 'vmoe'\].*'output'"):
        SparseMoE(num_experts=4, intermediate_dim=8, dropout_placement="output")


def test_groups_straddle_examples_as_in_vmoe():
    # 2 examples of 6 tokens, groups of 4: vmoe reshapes the 12 tokens into
    # 3 groups of 4 consecutive tokens. Routing 3 "examples" of 4 tokens
    # (one group each) with the same layer must give the same outputs.
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, group_size=4,
                    capacity_factor=0.5, capacity_multiple_of=1, capacity_formula="vmoe",
                    batch_priority=False)
    x = np.random.default_rng(2).normal(size=(2, 6, 5)).astype("float32")
    straddling = ops.convert_to_numpy(moe(x))
    assert moe.batch_multiple() == 2  # 4 / gcd(4, 6)
    regrouped = ops.convert_to_numpy(moe(x.reshape(3, 4, 5))).reshape(2, 6, 5)
    np.testing.assert_allclose(straddling, regrouped, atol=1e-6)
    assert moe.capacity() == 1  # ceil(4 * 2 * 0.5 / 4): tokens are dropped
    stats = moe.routing_stats(x)
    assert stats["router_probs"].shape == (3, 4, 4) and stats["dropped_fraction"] > 0
    with pytest.raises(ValueError, match=r"batch=3 x tokens=6.*group_size=4.*multiple of 2"):
        moe(np.zeros((3, 6, 5), "float32"))
