"""Expert-parallel checks on 8 simulated CPU devices (JAX).

Run by tests/distribution/test_expert_parallel.py in a fresh process, since
`--xla_force_host_platform_device_count` must be set before JAX starts.
Prints one JSON line with the measurements; the tests assert on them.

    python tests/distribution/ep_worker.py OUT.json
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.distribution import data_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import expert_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import is_expert_variable_path  # noqa: E402

TOKENS, DIM, CLASSES = 8, 8, 10


def build_model(num_experts=8, router="token_choice", seed=0):
    """Input (8 tokens of 8 features) -> Dense -> residual SparseMoE -> pool -> Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((TOKENS, DIM))
    h = keras.layers.Dense(16, name="embed")(inputs)
    moe = SparseMoE(num_experts=num_experts, intermediate_dim=16, top_k=2, router=router,
                    name="moe")
    h = keras.layers.Add()([h, moe(h)])
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(h))


def digits(n):
    data = load_digits()
    x = (data.data[:n] / 16.0).astype("float32").reshape(-1, TOKENS, DIM)
    return x, data.target[:n].astype("int32")


def shard_report(variables):
    """Per variable: fraction of its bytes on each device, and expert ranges."""
    report = {}
    for v in variables:
        arr = v.value
        fractions = {}
        ranges = {}
        for shard in arr.addressable_shards:
            fractions[shard.device.id] = shard.data.nbytes / max(arr.nbytes, 1)
            if arr.ndim:
                sl = shard.index[0]
                ranges[shard.device.id] = [sl.start or 0, arr.shape[0] if sl.stop is None
                                           else sl.stop]
        report[v.path] = {
            "expert": is_expert_variable_path(v.path),
            "fractions": sorted(fractions.values()),
            "devices": len(fractions),
            "ranges": sorted({tuple(r) for r in ranges.values()}),
            "spec": str(getattr(arr.sharding, "spec", "")),
        }
    return report


def max_diff(a, b):
    return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b)))


def collectives(model, x, training=False):
    """Counts of cross-device ops in the compiled forward pass."""
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    xs = jax.device_put(x, keras.distribution.distribution().get_data_layout(x.shape)
                        .backend_layout)
    fn = jax.jit(lambda a, b, c: model.stateless_call(a, b, c, training=training)[0])
    text = fn.lower(tv, ntv, xs).compile().as_text()
    ops = re.findall(r" (all-to-all|all-gather|all-reduce|reduce-scatter|collective-permute)"
                     r"(?:-start)?\(", text)
    return {name: ops.count(name) for name in sorted(set(ops))}


def main(out_path):
    results = {"device_count": jax.device_count()}
    x, y = digits(512)
    xb, yb = x[:32], y[:32]

    # --- 1. weight placement, for a (1 x 8) and a (2 x 4) mesh.
    for ep in (8, 4):
        dist = expert_parallel_distribution(expert_parallel=ep)
        with dist.scope():
            model = build_model(num_experts=8)
            optimizer = keras.optimizers.Adam(1e-3)
            optimizer.build(model.trainable_variables)
        results[f"placement_ep{ep}"] = {
            "mesh": dict(zip(dist.device_mesh.axis_names, dist.device_mesh.shape)),
            "weights": shard_report(model.weights),
            "optimizer": shard_report(
                [v for v in optimizer.variables if "kernel_in" in v.path]),
        }

    # --- 2. one SGD step: distributed (2 x 4 mesh) vs single device.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    single = build_model()
    single.compile(keras.optimizers.SGD(0.1), loss)
    initial = single.get_weights()
    dist = expert_parallel_distribution(expert_parallel=4)
    with dist.scope():
        sharded = build_model()
        sharded.set_weights(initial)
        sharded.compile(keras.optimizers.SGD(0.1), loss)
        out_sharded = sharded.predict(xb, batch_size=32, verbose=0)
        out_eager = sharded(xb)  # not jitted: the constraints reshard eagerly
        loss_sharded = float(sharded.train_on_batch(xb, yb))
        after_sharded = sharded.predict(xb, batch_size=32, verbose=0)
    out_single = single.predict(xb, batch_size=32, verbose=0)
    loss_single = float(single.train_on_batch(xb, yb))
    after_single = single.predict(xb, batch_size=32, verbose=0)
    with data_parallel_distribution().scope():
        replicated = build_model()
        replicated.set_weights(initial)
        replicated.compile(keras.optimizers.SGD(0.1), loss)
        loss_replicated = float(replicated.train_on_batch(xb, yb))
        results["data_parallel"] = {
            "weights": shard_report(replicated.weights),
            "loss_diff": abs(loss_replicated - loss_single),
        }
    results["step"] = {
        "output_diff": max_diff([out_sharded], [out_single]),
        "eager_output_diff": max_diff([out_eager], [out_single]),
        "loss_single": loss_single,
        "loss_sharded": loss_sharded,
        "weight_diff": max_diff(sharded.get_weights(), single.get_weights()),
        "output_after_diff": max_diff([after_sharded], [after_single]),
    }

    # --- 3. short fit on digits, both ways.
    histories = {}
    for name, distribution in (("single", None), ("sharded", dist)):
        keras.distribution.set_distribution(distribution)
        model = build_model(seed=1)
        model.compile(keras.optimizers.Adam(1e-2), loss, metrics=["accuracy"])
        hist = model.fit(x, y, batch_size=64, epochs=4, shuffle=False, verbose=0)
        histories[name] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    keras.distribution.set_distribution(None)
    results["fit"] = histories

    # --- 4. experts not divisible by the expert-parallel size.
    errors = {}
    with dist.scope():
        try:
            build_model(num_experts=6)
            errors["build"] = None
        except ValueError as e:
            errors["build"] = str(e)
    try:
        expert_parallel_distribution(build_model(num_experts=6), expert_parallel=4)
        errors["factory"] = None
    except ValueError as e:
        errors["factory"] = str(e)
    results["errors"] = errors

    # --- 5. checkpoints across layouts.
    ckpt = {}
    with tempfile.TemporaryDirectory() as tmp:
        with dist.scope():
            src = build_model(seed=2)
            ref = src.predict(xb, verbose=0)
            src.save_weights(os.path.join(tmp, "d.weights.h5"))
            src.save(os.path.join(tmp, "d.keras"))
        plain = build_model(seed=3)
        plain.load_weights(os.path.join(tmp, "d.weights.h5"))
        ckpt["sharded_h5_to_single"] = max_diff([plain.predict(xb, verbose=0)], [ref])
        loaded = keras.saving.load_model(os.path.join(tmp, "d.keras"))
        ckpt["sharded_keras_to_single"] = max_diff([loaded.predict(xb, verbose=0)], [ref])
        ckpt["single_devices"] = sorted(
            {len(v.value.sharding.device_set) for v in loaded.weights})

        src = build_model(seed=4)
        ref = src.predict(xb, verbose=0)
        src.save_weights(os.path.join(tmp, "s.weights.h5"))
        src.save(os.path.join(tmp, "s.keras"))
        with dist.scope():
            target = build_model(seed=5)
            target.load_weights(os.path.join(tmp, "s.weights.h5"))
            ckpt["single_h5_to_sharded"] = max_diff([target.predict(xb, verbose=0)], [ref])
            ckpt["single_h5_to_sharded_spec"] = str(
                target.get_layer("moe").experts.kernel_in.value.sharding.spec)
            loaded = keras.saving.load_model(os.path.join(tmp, "s.keras"))
            ckpt["single_keras_to_sharded"] = max_diff([loaded.predict(xb, verbose=0)], [ref])
            ckpt["single_keras_to_sharded_spec"] = str(
                loaded.get_layer("moe").experts.kernel_in.value.sharding.spec)
    results["checkpoint"] = ckpt

    # --- 6. communication: tokens reach expert devices by all-to-all.
    with dist.scope():
        results["collectives"] = {
            router: collectives(build_model(router=router), xb)
            for router in ("soft", "token_choice")
        }

    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
