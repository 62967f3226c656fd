"""The vmoe-exact options: tanh GELU by name, capacity rounding/multiple/
formula and explicit capacity, aux-loss convention; their validation and
their round trip through `get_config`."""

import math

import numpy as np
import pytest
from keras import ops

from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter
from keras_sparse_moe.layers.activations import get_activation
from keras_sparse_moe.layers.routing_ops import compute_capacity


def tanh_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def test_gelu_approximate_is_the_tanh_form():
    x = np.linspace(-4, 4, 81).astype("float32")
    ours = ops.convert_to_numpy(get_activation("gelu_approximate")(x))
    np.testing.assert_allclose(ours, tanh_gelu(x.astype("float64")), atol=1e-6)
    exact = ops.convert_to_numpy(get_activation("gelu")(x))
    assert np.max(np.abs(exact - ours)) > 1e-4  # "gelu" stays the exact form


def test_experts_with_tanh_gelu_round_trip():
    experts = Experts(num_experts=2, intermediate_dim=4, activation="gelu_approximate",
                      use_bias=False)
    x = np.random.RandomState(0).randn(2, 3, 5).astype("float32")
    y = ops.convert_to_numpy(experts(x))
    kernel_in = ops.convert_to_numpy(experts.kernel_in)
    kernel_out = ops.convert_to_numpy(experts.kernel_out)
    expected = np.einsum("esh,ehd->esd", tanh_gelu(np.einsum("esd,edh->esh", x, kernel_in)),
                         kernel_out)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    config = experts.get_config()
    assert config["activation"] == "gelu_approximate"
    clone = Experts.from_config(config)
    assert clone.activation is experts.activation


def test_unknown_activation_names_the_argument():
    with pytest.raises(ValueError, match="activation.*gelu_tanhh"):
        Experts(num_experts=2, intermediate_dim=4, activation="gelu_tanhh")


def test_capacity_options_reach_the_router_and_round_trip():
    moe = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=2.0,
                    capacity_multiple_of=4, capacity_formula="vmoe",
                    aux_loss_convention="vmoe")
    moe(np.zeros((2, 17, 6), "float32"))
    assert moe.capacity() == 20  # 17 * 2 * 2 / 4 = 17, up to a multiple of 4, not capped
    clone = SparseMoE.from_config(moe.get_config())
    clone(np.zeros((2, 17, 6), "float32"))
    assert clone.capacity() == 20
    assert clone.router.aux_loss_convention == "vmoe"
    default = SparseMoE(num_experts=4, intermediate_dim=8, top_k=2, capacity_factor=2.0)
    default(np.zeros((2, 17, 6), "float32"))
    assert default.capacity() == 17


def test_explicit_capacity():
    router = TokenChoiceRouter(4, top_k=2, capacity=3, eval_capacity_factor=2.0)
    router.build((None, 16, 8))
    assert router.capacity(training=True) == 3
    assert router.capacity(training=False) == 16
    out = router(np.random.RandomState(1).randn(2, 16, 8).astype("float32"), training=True)
    counts = ops.convert_to_numpy(out["dispatch_mask"]).sum(axis=(1, 3))
    assert tuple(out["dispatch_mask"].shape) == (2, 16, 4, 3) and counts.max() <= 3
    assert TokenChoiceRouter.from_config(router.get_config()).fixed_capacity == 3


@pytest.mark.parametrize(
    "group_size,top_k,factor,rounding,multiple,expected",
    [
        (34, 1, 1.0, "round", 1, 8),  # 8.5 rounds half to even
        (66, 1, 1.0, "round", 1, 16),  # 16.5 -> 16
        (16, 1, 1.0, "ceil", 4, 4),
        (33, 2, 1.05, "ceil", 4, 20),  # ceil(17.325) = 18 -> 20
        (100, 1, 1.1, "ceil", 1, 12),  # no round-off tolerance in vmoe's formula
    ],
)
def test_vmoe_capacity_formula(group_size, top_k, factor, rounding, multiple, expected):
    assert compute_capacity(group_size, 4 if group_size != 100 else 10, top_k, factor,
                            rounding=rounding, multiple_of=multiple,
                            formula="vmoe") == expected


def test_vmoe_capacity_below_one_raises():
    with pytest.raises(ValueError, match="below 1"):
        compute_capacity(4, 16, 1, 1.0, rounding="round", formula="vmoe")


@pytest.mark.parametrize(
    "option,value",
    [("capacity_rounding", "floor"), ("capacity_multiple_of", 0),
     ("capacity_formula", "gshard"), ("capacity", 0), ("aux_loss_convention", "switch")],
)
def test_bad_options_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        TokenChoiceRouter(4, **{option: value})


def test_soft_router_slots_from_capacity_factor():
    router = SoftRouter(4, slots_per_expert=None, capacity_factor=2.0)
    router.build((None, 16, 8))
    assert router.capacity() == 8 and tuple(router.kernel.shape) == (8, 32)
    config = router.get_config()
    assert config["slots_per_expert"] is None and config["capacity_factor"] == 2.0
    clone = SoftRouter.from_config(config)
    clone.build((None, 16, 8))
    assert clone.capacity() == 8
