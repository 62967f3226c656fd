"""All-to-all dispatch checks on 8 simulated CPU devices (JAX).

Run by tests/distribution/test_all_to_all.py in a fresh process, since
`--xla_force_host_platform_device_count` must be set before JAX starts.
Writes one JSON file with the measurements; the tests assert on them.

    python tests/distribution/a2a_worker.py OUT.json
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.distribution import expert_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution.hlo import collective_shapes  # noqa: E402

TOKENS, DIM = 8, 24  # DIM differs from every other axis length: token tensors end in 24
ROUTERS = ("token_choice", "expert_choice", "soft")


def build_model(router, group_size=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((TOKENS, 12))
    h = keras.layers.Dense(DIM, name="embed")(inputs)
    moe = SparseMoE(num_experts=8, intermediate_dim=16, top_k=2, router=router,
                    group_size=group_size, name="moe")
    h = keras.layers.Add()([h, moe(h)])
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(h))


def train_step(model):
    """Jitted (loss, gradients) of one training step, in weights order."""

    def loss(trainable, non_trainable, x, y):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return keras.ops.mean(ce)

    return jax.jit(jax.value_and_grad(loss))


def run(router, distribution, weights, x, y):
    """Outputs, loss, gradients and compiled HLO text of `router`'s model."""
    if distribution is None:
        model = build_model(router)
        model.set_weights(weights)
        xs, ys = x, y
    else:
        with distribution.scope():
            model = build_model(router)
            model.set_weights(weights)
        xs = jax.device_put(x, distribution.get_data_layout(x.shape).backend_layout)
        ys = jax.device_put(y, distribution.get_data_layout(y.shape).backend_layout)
    with (distribution.scope() if distribution else _null()):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        outputs = jax.jit(lambda t, n, a: model.stateless_call(t, n, a)[0])(
            trainable, non_trainable, xs)
        step = train_step(model)
        loss, grads = step(trainable, non_trainable, xs, ys)
        hlo = step.lower(trainable, non_trainable, xs, ys).compile().as_text()
    return {"outputs": np.asarray(outputs), "loss": float(loss),
            "grads": [np.asarray(g) for g in grads], "hlo": hlo}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(out_path):
    results = {"device_count": jax.device_count()}
    rng = np.random.default_rng(0)
    x = rng.random((32, TOKENS, 12), dtype=np.float32)
    y = rng.integers(0, 5, 32).astype("int32")
    for router in ROUTERS:
        weights = build_model(router).get_weights()
        single = run(router, None, weights, x, y)
        for ep in (8, 4):
            dist = expert_parallel_distribution(expert_parallel=ep, num_experts=8)
            sharded = run(router, dist, weights, x, y)
            shapes = collective_shapes(sharded["hlo"])
            results[f"{router}_ep{ep}"] = {
                "output_diff": float(np.max(np.abs(sharded["outputs"] - single["outputs"]))),
                "loss_diff": abs(sharded["loss"] - single["loss"]),
                "grad_diff": float(max(np.max(np.abs(a - b))
                                       for a, b in zip(sharded["grads"], single["grads"]))),
                "grad_scale": float(max(np.max(np.abs(b)) for b in single["grads"])),
                "collectives": sorted({name for name, _, _ in shapes}),
                "gathered_token_tensors": [
                    [name, list(shape)] for name, _, shape in shapes
                    if name == "all-gather" and shape and shape[-1] == DIM],
            }

    # Routing groups of 2 examples on 8 devices with a batch of 8: a group
    # would straddle two devices.
    dist = expert_parallel_distribution(expert_parallel=8, num_experts=8)
    with dist.scope():
        model = build_model("token_choice", group_size=2 * TOKENS)
        try:
            model.predict(x[:8], batch_size=8, verbose=0)
            results["straddle_error"] = None
        except ValueError as e:
            results["straddle_error"] = str(e)
        model = build_model("token_choice", group_size=2 * TOKENS)
        out = model.predict(x[:16], batch_size=16, verbose=0)  # 8 groups: one per device
    plain = build_model("token_choice", group_size=2 * TOKENS)
    results["whole_groups_diff"] = float(np.max(np.abs(
        out - plain.predict(x[:16], batch_size=16, verbose=0))))

    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
