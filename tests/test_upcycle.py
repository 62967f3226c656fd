"""keras_sparse_moe.upcycle: sparse upcycling of a dense ViT."""

import keras
import numpy as np
import pytest
from keras_hub.models import ViTBackbone
from keras_hub.models import ViTImageClassifier

from keras_sparse_moe.models import MoEViTBackbone
from keras_sparse_moe.upcycle import upcycle

DENSE = dict(image_shape=(16, 16, 3), patch_size=4, num_layers=3, num_heads=2, hidden_dim=32,
             mlp_dim=64)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def randomized(model, seed=0):
    """Give every weight a random value, so that any mis-copied one shows."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, tuple(weight.shape)).astype("float32"))
    return model


def images(batch=2, seed=1):
    return np.random.default_rng(seed).random((batch, 16, 16, 3)).astype("float32")


def max_diff(moe, dense, x):
    """Max abs difference of the two models' outputs."""
    return float(np.max(np.abs(to_numpy(moe(x)) - to_numpy(dense(x)))))


@pytest.mark.parametrize(
    "dense_kwargs, upcycle_kwargs",
    [
        ({}, {"capacity_factor": None}),
        ({"use_class_token": False, "use_mha_bias": False, "use_mlp_bias": False,
          "use_patch_bias": False, "layer_norm_epsilon": 1e-5},
         {"moe_layers": "all", "top_k": 1, "capacity_factor": 8.0,
          "eval_capacity_factor": 4.0, "group_size": 32, "noise_std": 0.5}),
    ],
    ids=["dropless_top2", "no_biases_gap_eps_top1_large_capacity_groups"],
)
def test_upcycled_model_computes_the_dense_function(dense_kwargs, upcycle_kwargs):
    dense = randomized(ViTBackbone(**DENSE, **dense_kwargs))
    kwargs = {"num_experts": 4, **upcycle_kwargs}
    moe = upcycle(dense, seed=0, **kwargs)
    assert isinstance(moe, MoEViTBackbone)
    assert moe.moe_layer_indices
    x = images()
    assert max_diff(moe, dense, x) <= 1e-5


def test_experts_are_copies_and_router_is_new():
    dense = randomized(ViTBackbone(**DENSE))
    before = [to_numpy(w).copy() for w in dense.weights]
    moe = upcycle(dense, num_experts=4, moe_layers="last_1", router_stddev=0.01, seed=3)
    assert moe.moe_layer_indices == (1,)
    mlp = dense.get_layer("vit_encoder").encoder_layers[1].mlp
    experts = moe.get_layer("encoder_block_1").mlp.experts
    copies = [
        (experts.kernel_in, mlp.dense_1.kernel), (experts.bias_in, mlp.dense_1.bias),
        (experts.kernel_out, mlp.dense_2.kernel), (experts.bias_out, mlp.dense_2.bias),
    ]
    for stacked, dense_weight in copies:
        for expert in range(4):
            np.testing.assert_array_equal(to_numpy(stacked)[expert], to_numpy(dense_weight))
    router = to_numpy(moe.get_layer("encoder_block_1").mlp.router.kernel)
    assert router.shape == (32, 4)
    assert 0.005 < router.std() < 0.02
    again = upcycle(dense, num_experts=4, moe_layers="last_1", router_stddev=0.01, seed=3)
    again_router = again.get_layer("encoder_block_1").mlp.router.kernel
    np.testing.assert_array_equal(router, to_numpy(again_router))
    # The dense model is left as it was.
    for old, weight in zip(before, dense.weights):
        np.testing.assert_array_equal(old, to_numpy(weight))
    # Same settings as the dense model.
    assert (moe.pooling, moe.layer_norm_epsilon, moe.num_heads) == ("token", 1e-6, 2)
    assert moe.get_layer("encoder_block_1").mlp.router.renormalize_gates


@pytest.mark.parametrize("router", ["expert_choice", "soft"])
def test_other_routers_start_from_the_dense_experts(router):
    dense = randomized(ViTBackbone(**DENSE))
    moe = upcycle(dense, num_experts=4, top_k=1, router=router)
    experts = moe.get_layer("encoder_block_1").mlp.experts
    kernel = to_numpy(dense.get_layer("vit_encoder").encoder_layers[1].mlp.dense_1.kernel)
    np.testing.assert_array_equal(to_numpy(experts.kernel_in)[3], kernel)
    assert moe.get_layer("encoder_block_1").mlp.router_type == router


@pytest.mark.parametrize("stem_channels", [None, [8, 12]], ids=["patchify", "stem"])
def test_upcycle_dense_moe_vit_backbone(stem_channels):
    dense = randomized(MoEViTBackbone(**DENSE, moe_layers="none", stem_channels=stem_channels))
    moe = upcycle(dense, num_experts=4, moe_layers="every_2", capacity_factor=None)
    assert moe.moe_layer_indices == (1,)
    assert moe.stem_channels == stem_channels
    x = images()
    assert max_diff(moe, dense, x) <= 1e-5


def test_upcycle_rejects_what_it_cannot_copy():
    dense = ViTBackbone(**DENSE)
    with pytest.raises(ValueError, match="dense_backbone"):
        upcycle(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    classifier = ViTImageClassifier(backbone=dense, num_classes=3)
    with pytest.raises(ValueError, match=r"model\.backbone"):
        upcycle(classifier)
    with pytest.raises(ValueError, match="already MoE"):
        upcycle(MoEViTBackbone(**DENSE, num_experts=2))
    with pytest.raises(ValueError, match="gated"):
        upcycle(dense, gated=True)
    with pytest.raises(ValueError, match="activation"):
        upcycle(dense, activation="relu")
    with pytest.raises(ValueError, match="use_bias"):
        upcycle(dense, use_bias=False)
    with pytest.raises(ValueError, match="router_stddev"):
        upcycle(dense, router_stddev=-1.0)
    with pytest.raises(ValueError, match="seed"):
        upcycle(dense, seed="zero")
    with pytest.raises(ValueError, match="num_experts"):
        upcycle(dense, num_experts=0)
    with pytest.raises(ValueError, match="moe_layers"):
        upcycle(dense, moe_layers="every_other")
    channels_first = ViTBackbone(**{**DENSE, "image_shape": (3, 16, 16)},
                                 data_format="channels_first")
    with pytest.raises(ValueError, match="channels_last"):
        upcycle(channels_first)
