"""Dropless token choice (`capacity_factor=None`): the ragged path (experts
on expert-sorted rows, JAX and PyTorch) against the padded path and the NumPy
reference; gradients, masks, jit, saving and the structural sparsity."""

import os

import keras
import numpy as np
import pytest

from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers.grouped_matmul import block_rows
from keras_sparse_moe.layers.grouped_matmul import grouped_matmul
from keras_sparse_moe.layers.grouped_matmul import is_supported
from tests.layers import numpy_reference as npref
from tests.layers.grad_utils import loss_and_gradients
from tests.layers.moe_helpers import random_tokens
from tests.layers.moe_helpers import randomize_weights
from tests.layers.moe_helpers import reference_forward
from tests.layers.moe_helpers import to_numpy

BACKEND = keras.backend.backend()
RAGGED = is_supported()
needs_ragged = pytest.mark.skipif(not RAGGED, reason=f"no ragged path on {BACKEND}")
NUM_EXPERTS, DIM = 4, 6


def _inputs(shape=(3, 8, DIM), seed=0):
    # Positive features: with a negative router column for the last expert
    # (see `_pair`), that expert is never chosen and receives zero tokens.
    return np.abs(random_tokens(shape, seed=seed)) + 0.1


def _pair(seed=0, shape=(3, 8, DIM), **kwargs):
    """A dropless layer on the ragged path (or on "auto" where there is none)
    and the same layer, same weights, on the padded path."""
    config = dict(num_experts=NUM_EXPERTS, intermediate_dim=8, capacity_factor=None,
                  noise_std=0.0)
    config.update(kwargs)
    ragged = SparseMoE(dropless_impl="ragged" if RAGGED else "auto", **config)
    padded = SparseMoE(dropless_impl="padded", **config)
    for layer in (ragged, padded):
        layer.build(shape)
    randomize_weights(ragged, seed=seed, scale=0.5)
    kernel = to_numpy(ragged.router.kernel)
    kernel[:, -1] = -3.0  # the last expert gets no token
    ragged.router.kernel.assign(kernel)
    padded.set_weights(ragged.get_weights())
    return ragged, padded


CASES = {
    "top1": dict(top_k=1),
    "top2": dict(top_k=2),
    "top2_gated_silu": dict(top_k=2, gated=True, activation="silu"),
    "top1_gated_no_bias": dict(top_k=1, gated=True, activation="silu", use_bias=False),
    "top2_no_bias_relu": dict(top_k=2, use_bias=False, activation="relu"),
    "top2_renorm": dict(top_k=2, renormalize_gates=True, batch_priority=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ragged_equals_padded_and_reference(case):
    ragged, padded = _pair(**CASES[case])
    assert ragged.uses_ragged_experts() == RAGGED
    assert not padded.uses_ragged_experts()
    x = _inputs()
    stats = ragged.routing_stats(x)
    assert stats["expert_fraction"][-1] == 0.0  # an expert with zero tokens
    assert stats["dropped_fraction"] == 0.0
    y = to_numpy(ragged(x))
    np.testing.assert_allclose(y, to_numpy(padded(x)), atol=1e-5)
    np.testing.assert_allclose(y, reference_forward(ragged, x), atol=1e-5)


def test_every_expert_used_and_grouped_tokens():
    # Several routing groups per example (group_size < tokens), every expert busy.
    config = dict(num_experts=NUM_EXPERTS, intermediate_dim=8, top_k=2,
                  capacity_factor=None, group_size=4)
    ragged = SparseMoE(**config)
    padded = SparseMoE(dropless_impl="padded", **config)
    x = random_tokens((3, 8, DIM), seed=4)
    for layer in (ragged, padded):
        layer.build(x.shape)
    randomize_weights(ragged, seed=5)
    padded.set_weights(ragged.get_weights())
    assert np.all(ragged.routing_stats(x)["expert_fraction"] > 0)
    np.testing.assert_allclose(to_numpy(ragged(x)), to_numpy(padded(x)), atol=1e-5)
    np.testing.assert_allclose(to_numpy(ragged(x)), reference_forward(ragged, x), atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_gradients_match_the_padded_path(gated):
    kwargs = dict(top_k=2, gated=gated, activation="silu" if gated else "gelu",
                  importance_loss_weight=0.1, load_loss_weight=0.0)
    ragged, padded = _pair(seed=3, **kwargs)
    x = _inputs(seed=6)
    target = keras.ops.convert_to_tensor(random_tokens(x.shape, seed=7))

    def loss_fn(y):
        return keras.ops.mean((y - target) ** 2)

    loss_r, grads_r = loss_and_gradients(ragged, x, loss_fn)
    loss_p, grads_p = loss_and_gradients(padded, x, loss_fn)
    assert loss_r == pytest.approx(loss_p, rel=1e-5)
    names = {path.split("/")[-1]: path for path in grads_r}
    for path, grad in grads_r.items():
        other = path.replace(ragged.name, padded.name, 1)
        np.testing.assert_allclose(grad, grads_p[other], atol=1e-5, err_msg=path)
    # Gradients reach the router (through the gates) and every expert weight
    # of every expert that received tokens; the idle last expert gets none.
    assert np.any(grads_r[names["kernel"]] != 0)
    for name in ("kernel_in", "kernel_out", "bias_in", "bias_out") + (
            ("kernel_gate",) if gated else ()):
        grad = grads_r[names[name]]
        assert np.all(np.any(grad[:-1] != 0, axis=tuple(range(1, grad.ndim)))), name
        np.testing.assert_array_equal(grad[-1], 0.0)


@pytest.mark.parametrize("batch_priority", [True, False])
def test_token_mask(batch_priority):
    ragged, padded = _pair(seed=8, top_k=2, batch_priority=batch_priority)
    x = _inputs(seed=9)
    mask = np.ones(x.shape[:2], bool)
    mask[0, 5:] = False
    mask[2, ::3] = False
    y = to_numpy(ragged(x, token_mask=mask))
    np.testing.assert_array_equal(y[~mask], 0.0)
    np.testing.assert_allclose(y, to_numpy(padded(x, token_mask=mask)), atol=1e-5)
    np.testing.assert_allclose(y, reference_forward(ragged, x, token_mask=mask), atol=1e-5)
    # Padding values cannot reach real tokens.
    x_other = x.copy()
    x_other[~mask] = np.nan
    y_other = to_numpy(ragged(x_other, token_mask=mask))
    np.testing.assert_allclose(y_other[mask], y[mask], atol=1e-6)


def test_training_call_records_no_drops_and_losses():
    ragged, _ = _pair(seed=10, top_k=2, noise_std=1.0, jitter=0.1, dropout=0.2)
    x = _inputs(seed=11)
    y = to_numpy(ragged(x, training=True))
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert float(to_numpy(ragged.stat_dropped_fraction)) == 0.0
    assert len(ragged.losses) == 1 and np.isfinite(float(to_numpy(ragged.losses[0])))


def test_eval_capacity_factor_limits_inference_only():
    moe = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, capacity_factor=None,
                    eval_capacity_factor=1.0)
    assert moe.uses_ragged_experts(training=True) == RAGGED
    assert not moe.uses_ragged_experts(training=False)
    capped = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, capacity_factor=1.0)
    assert not capped.uses_ragged_experts(training=True)


def spy_on_experts(moe):
    shapes = []
    call = moe.experts.call

    def spy(inputs, training=None, group_sizes=None):
        shapes.append(tuple(int(d) for d in inputs.shape))
        return call(inputs, training=training, group_sizes=group_sizes)

    moe.experts.call = spy
    return shapes


@needs_ragged
def test_expert_rows_do_not_grow_with_num_experts():
    x = random_tokens((3, 8, DIM))
    rows = {}
    for num_experts in (4, 8):
        moe = SparseMoE(num_experts=num_experts, intermediate_dim=8, top_k=2,
                        capacity_factor=None)
        moe.build(x.shape)
        shapes = spy_on_experts(moe)
        moe(x)
        rows[num_experts] = shapes
    # Every routed assignment once: batch * tokens * top_k rows, whatever E.
    assert rows == {e: [(3 * 8 * 2, DIM)] for e in (4, 8)}
    padded = SparseMoE(num_experts=8, intermediate_dim=8, capacity_factor=None,
                       dropless_impl="padded")
    padded.build(x.shape)
    shapes = spy_on_experts(padded)
    padded(x)
    assert shapes == [(8, 3 * 8, DIM)]  # E buffers of a whole group each


@pytest.mark.parametrize("method", [None, "ragged_dot"])
@pytest.mark.parametrize("with_bias", [False, True])
@needs_ragged
def test_grouped_matmul_against_numpy(method, with_bias):
    if method and BACKEND != "jax":
        pytest.skip("method= is JAX only")
    rng = np.random.default_rng(0)
    sizes = np.array([7, 0, 20, 3, 0], "int32")  # empty groups, 5 trailing rows
    x = rng.normal(size=(35, 4)).astype("float32")
    w = rng.normal(size=(5, 4, 3)).astype("float32")
    b = rng.normal(size=(5, 3)).astype("float32") if with_bias else np.zeros((5, 3), "float32")
    grad_out = rng.normal(size=(35, 3)).astype("float32")
    expected, expected_dx = np.zeros((35, 3)), np.zeros(x.shape)
    expected_dw, expected_db = np.zeros(w.shape), np.zeros(b.shape)
    ends = np.cumsum(sizes)
    for e, (start, end) in enumerate(zip(ends - sizes, ends)):
        expected[start:end] = x[start:end] @ w[e] + b[e]
        expected_dx[start:end] = grad_out[start:end] @ w[e].T
        expected_dw[e] = x[start:end].T @ grad_out[start:end]
        expected_db[e] = grad_out[start:end].sum(axis=0)
    kwargs = {"method": method} if method else {}

    def run(x, w, b, sizes):
        return grouped_matmul(x, w, sizes, bias=b if with_bias else None, **kwargs)

    np.testing.assert_allclose(to_numpy(run(x, w, b, sizes)), expected, atol=1e-5)
    if BACKEND == "jax":
        import jax

        def f(x, w, b):
            return (run(x, w, b, sizes) * grad_out).sum()

        dx, dw, db = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, w, b)
    else:
        import torch

        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        (run(xt, wt, bt, torch.tensor(sizes)) * torch.tensor(grad_out)).sum().backward()
        dx, dw, db = xt.grad, wt.grad, bt.grad
    np.testing.assert_allclose(to_numpy(dx), expected_dx, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dw), expected_dw, atol=1e-5)
    if with_bias:
        np.testing.assert_allclose(to_numpy(db), expected_db, atol=1e-5)


def test_block_rows_bound_the_padding():
    for rows, groups in [(8320, 8), (8320, 32), (8320, 64), (40, 4), (10**6, 2)]:
        block = block_rows(rows, groups)
        assert 8 <= block <= 128 and block & (block - 1) == 0
        # The padding (below one block per group) stays within a quarter of
        # the rows, unless the 8-row minimum applies.
        assert groups * block <= max(rows // 4, 8 * groups)


@needs_ragged
def test_experts_layer_ragged_input_matches_numpy():
    experts = Experts(num_experts=3, intermediate_dim=5, gated=True, activation="silu")
    experts.build((3, None, DIM))
    randomize_weights(experts, seed=12)
    sizes = np.array([4, 0, 6], "int32")
    x = random_tokens((10, DIM), seed=13)
    y = to_numpy(experts(x, group_sizes=sizes))
    weights = {n: to_numpy(getattr(experts, n)).astype("float64")
               for n in ("kernel_in", "kernel_gate", "bias_in", "kernel_out", "bias_out")}
    expected = np.concatenate([
        npref.experts(x[None, :4], {k: v[:1] for k, v in weights.items()}, "silu", True)[0],
        npref.experts(x[None, 4:], {k: v[2:] for k, v in weights.items()}, "silu", True)[0],
    ])
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    ragged, _ = _pair(seed=14, top_k=2, gated=True, activation="silu")
    x = _inputs(seed=15)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, ragged(inputs))
    path = os.path.join(tmp_path, "dropless.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert layer.get_config() == ragged.get_config()
    assert layer.router.dropless_impl == ragged.router.dropless_impl
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    # Configs saved before `dropless_impl` existed load with the default.
    config = ragged.get_config()
    del config["dropless_impl"]
    assert SparseMoE.from_config(config).router.dropless_impl == "auto"


def test_fit_and_predict_compiled():
    # `jit_compile="auto"`: XLA on JAX, eager on PyTorch, tf.function on TF CPU.
    inputs = keras.Input((8, DIM))
    moe = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, top_k=2,
                    capacity_factor=None, name="moe")
    model = keras.Model(inputs, moe(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = random_tokens((4, 8, DIM), seed=16), random_tokens((4, 8, DIM), seed=17)
    before = [to_numpy(v) for v in (moe.router.kernel, moe.experts.kernel_in)]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for old, v in zip(before, (moe.router.kernel, moe.experts.kernel_in)):
        assert np.any(to_numpy(v) != old), v.path
    np.testing.assert_allclose(model.predict(x, verbose=0), to_numpy(model(x)), atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_jax_jit_stateless_call():
    import jax

    ragged, padded = _pair(seed=18, top_k=2)
    x = _inputs(seed=19)

    @jax.jit
    def run(trainable, non_trainable, x):
        return ragged.stateless_call(trainable, non_trainable, x)[0]

    y = run([v.value for v in ragged.trainable_variables],
            [v.value for v in ragged.non_trainable_variables], x)
    np.testing.assert_allclose(to_numpy(y), to_numpy(padded(x)), atol=1e-5)


def test_symbolic_call_with_routing():
    inputs = keras.Input((8, DIM))
    moe = SparseMoE(num_experts=NUM_EXPERTS, intermediate_dim=8, capacity_factor=None)
    outputs, routing = moe(inputs, return_routing=True)
    assert tuple(outputs.shape) == (None, 8, DIM)
    assert tuple(routing["expert_index"].shape)[-1] == 2


@needs_ragged
def test_mixed_precision_close_to_reference():
    keras.config.set_dtype_policy("mixed_bfloat16")
    ragged, _ = _pair(seed=20, top_k=2, gated=True, activation="silu")
    x = _inputs(seed=21)
    y = ragged(keras.ops.cast(x, "bfloat16"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(y), reference_forward(ragged, x), atol=0.1)
    _, grads = loss_and_gradients(ragged, x, lambda y: keras.ops.mean(
        keras.ops.cast(y, "float32") ** 2))
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_dropless_impl_validation():
    with pytest.raises(ValueError, match="dropless_impl.*'sparse'"):
        SparseMoE(num_experts=4, intermediate_dim=8, capacity_factor=None,
                  dropless_impl="sparse")
    with pytest.raises(ValueError, match="dropless_impl.*capacity_factor=1.25"):
        SparseMoE(num_experts=4, intermediate_dim=8, dropless_impl="ragged")
    # A token-choice option is not one of expert choice's: it is ignored, as
    # every router ignores the other routers' flat SparseMoE options.
    moe = SparseMoE(num_experts=4, intermediate_dim=8, router="expert_choice",
                    capacity_factor=1.0, dropless_impl="ragged")
    assert "dropless_impl" not in moe.get_config()
    assert not moe.uses_ragged_experts(training=True)
    if not RAGGED:
        with pytest.raises(ValueError, match=f"dropless_impl.*{BACKEND}"):
            SparseMoE(num_experts=4, intermediate_dim=8, capacity_factor=None,
                      dropless_impl="ragged")
