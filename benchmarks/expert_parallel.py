"""Expert parallelism on simulated devices: parameter memory per device and
step time, 1 device vs N, and bytes moved by collectives per device (JAX
backend, CPU devices simulated by XLA).

    python benchmarks/expert_parallel.py                # 8 devices, 32 experts
    python benchmarks/expert_parallel.py --devices 4 --experts 16 --steps 5
    python benchmarks/expert_parallel.py --traffic      # collectives, 2/4/8 devices

`--traffic` compiles one training step (forward and backward, gradients with
respect to the weights and the input) of a model made of one `SparseMoE`
(E=8, D=128, H=256, top_k=2, capacity factor 1.25, groups of one example of
64 tokens) at a fixed per-device batch (`--batch-per-device`, default 4),
for each router, on a 1 x N expert-parallel mesh, N = 2, 4, 8 (one
subprocess per device count). From the compiled, partitioned HLO it sums per
device the bytes of the buffers of every all-to-all, all-gather, all-reduce,
reduce-scatter and collective-permute (the per-device result shapes; for an
all-to-all that includes the part a device keeps for itself). The analytic
all-to-all volume is `4 x slots x D x 4 bytes` per device: the dispatched
slots of the device's own groups (`G/N * E * C`; Soft MoE: `G/N * E *
slots_per_expert`), moved by dispatch and combine in the forward pass and
again in the backward pass.

The expert weights (and their Adam slots) of every SparseMoE are split along
the expert axis, so each device should hold `1/expert_parallel` of them; the
other weights are replicated. Step times on simulated CPU devices share the
same cores and only show the overhead of the partitioned program; they say
nothing about real accelerators.
"""

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
    parser.add_argument("--expert-parallel", type=int, default=None,
                        help="devices splitting the experts (default: all that divide)")
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2, help="SparseMoE blocks")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256, help="expert intermediate_dim")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed train steps")
    parser.add_argument("--traffic", action="store_true",
                        help="bytes per device moved by each kind of collective, 2/4/8 devices")
    parser.add_argument("--batch-per-device", type=int, default=4,
                        help="--traffic: examples of 64 tokens per device")
    parser.add_argument("--traffic-json", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


ARGS = parse_args()
if os.environ.get("KERAS_BACKEND", "jax") != "jax":
    sys.exit("benchmarks/expert_parallel.py needs KERAS_BACKEND=jax (keras.distribution).")
# The simulated device count must be fixed before JAX starts.
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={ARGS.devices}"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.distribution import expert_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import is_expert_variable_path  # noqa: E402
from keras_sparse_moe.distribution.hlo import COLLECTIVES  # noqa: E402
from keras_sparse_moe.distribution.hlo import collective_bytes  # noqa: E402


def build_model(args):
    inputs = keras.Input((args.tokens, args.dim))
    h = keras.layers.Dense(args.dim, name="embed")(inputs)
    for i in range(args.layers):
        y = keras.layers.LayerNormalization(name=f"norm_{i}")(h)
        y = SparseMoE(args.experts, args.hidden, top_k=2, name=f"moe_{i}")(y)
        h = keras.layers.Add()([h, y])
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))


def bytes_per_device(variables):
    """{device id: (expert bytes, other bytes)} of the addressable shards."""
    usage = {}
    for v in variables:
        expert = is_expert_variable_path(v.path)  # optimizer slots count as "other"
        for shard in v.value.addressable_shards:
            e, o = usage.get(shard.device.id, (0, 0))
            usage[shard.device.id] = (e + shard.data.nbytes, o) if expert else (
                e, o + shard.data.nbytes)
    return usage


def run(args, distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = build_model(args)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.tokens, args.dim), dtype=np.float32)
    y = rng.integers(0, 10, args.batch).astype("int32")
    model.train_on_batch(x, y)  # compile + build optimizer slots
    start = time.perf_counter()
    for _ in range(args.steps):
        float(model.train_on_batch(x, y))  # float() waits for the result
    step = (time.perf_counter() - start) / args.steps
    params = bytes_per_device(model.weights)
    slots = bytes_per_device(model.optimizer.variables)
    keras.distribution.set_distribution(None)
    expert_total = sum(int(np.prod(v.shape)) * 4 for v in model.weights
                       if is_expert_variable_path(v.path))
    return {"params": params, "slots": slots, "step": step, "expert_total": expert_total}


def mib(n):
    return f"{n / 2**20:.3f}"


def main(args):
    distribution = expert_parallel_distribution(
        expert_parallel=args.expert_parallel, num_experts=args.experts)
    ep = distribution.expert_parallel
    results = {"1 device": run(args, None),
               f"{args.devices} devices ({distribution.data_parallel}x{ep})":
               run(args, distribution)}
    table = Table(title=f"{args.layers} SparseMoE layers x {args.experts} experts, "
                        f"expert_parallel={ep}; MiB per device (max over devices)")
    for col in ("run", "expert params", "other params", "all params", "Adam slots",
                "expert share", "step (ms)"):
        table.add_column(col, justify="right")
    base_step = None
    for name, r in results.items():
        expert = max(e for e, _ in r["params"].values())
        other = max(o for _, o in r["params"].values())
        slots = max(e + o for e, o in r["slots"].values())
        base_step = base_step or r["step"]
        table.add_row(name, mib(expert), mib(other), mib(expert + other), mib(slots),
                      f"{expert / r['expert_total']:.4f}",
                      f"{1e3 * r['step']:.1f} ({r['step'] / base_step:.2f}x)")
    console = Console(width=110)
    console.print(table)
    console.print(f"Target expert share per device: 1/{ep} = {1 / ep:.4f}. Step times on "
                  "simulated CPU devices are informational only.")


TRAFFIC_DEVICES = (2, 4, 8)
TRAFFIC = {"experts": 8, "dim": 128, "hidden": 256, "top_k": 2, "tokens": 64,
           "capacity_factor": 1.25}


def traffic_child(args):
    """One device count: collective bytes of one training step per router."""
    import jax

    from keras_sparse_moe.layers.routing_ops import compute_capacity

    n = args.devices
    cfg = TRAFFIC
    distribution = expert_parallel_distribution(expert_parallel=n, num_experts=cfg["experts"])
    keras.distribution.set_distribution(distribution)
    batch = args.batch_per_device * n
    x = np.random.default_rng(0).random((batch, cfg["tokens"], cfg["dim"]), dtype=np.float32)
    xs = jax.device_put(x, distribution.get_data_layout(x.shape).backend_layout)
    results = {}
    for router in ("token_choice", "expert_choice", "soft"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((cfg["tokens"], cfg["dim"]))
        moe = SparseMoE(cfg["experts"], cfg["hidden"], top_k=cfg["top_k"], router=router,
                        capacity_factor=cfg["capacity_factor"], name="moe")
        model = keras.Model(inputs, moe(inputs))
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable, inputs, non_trainable):
            y, _ = model.stateless_call(trainable, non_trainable, inputs, training=True)
            return keras.ops.mean(keras.ops.square(y))

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        text = step.lower(trainable, xs, non_trainable).compile().as_text()
        groups = args.batch_per_device  # one group per example
        if router == "soft":
            slots = groups * cfg["experts"] * moe.router.slots_per_expert
        else:
            capacity = compute_capacity(cfg["tokens"], cfg["experts"], cfg["top_k"],
                                        cfg["capacity_factor"])
            slots = groups * cfg["experts"] * capacity
        results[router] = {"bytes": collective_bytes(text),
                           "analytic_all_to_all": 4 * slots * cfg["dim"] * 4}
    keras.distribution.set_distribution(None)
    with open(args.traffic_json, "w") as f:
        json.dump(results, f)


def traffic(args):
    """Run `traffic_child` at 2, 4 and 8 devices and print one table."""
    import tempfile

    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in TRAFFIC_DEVICES:
            out = os.path.join(tmp, f"{n}.json")
            cmd = [sys.executable, __file__, "--traffic", "--devices", str(n),
                   "--batch-per-device", str(args.batch_per_device), "--traffic-json", out]
            subprocess.run(cmd, check=True)
            with open(out) as f:
                measured[n] = json.load(f)
    cfg = TRAFFIC
    table = Table(title=(
        f"Collective bytes per device, one training step of one SparseMoE (E={cfg['experts']}, "
        f"D={cfg['dim']}, k={cfg['top_k']}, cf={cfg['capacity_factor']}), "
        f"{args.batch_per_device} x {cfg['tokens']} tokens per device, mesh 1 x N; MB"))
    for col in ("router", "devices", "all-to-all", "all-gather", "all-reduce",
                "reduce-scatter", "coll.-permute", "total", "analytic a2a", "total/analytic",
                "total vs 2 dev."):
        table.add_column(col, justify="right")
    for router in ("token_choice", "expert_choice", "soft"):
        base = None
        for n in TRAFFIC_DEVICES:
            r = measured[n][router]
            total = sum(r["bytes"].values())
            base = base or total
            table.add_row(router, str(n), *(f"{r['bytes'][c] / 1e6:.3f}" for c in COLLECTIVES),
                          f"{total / 1e6:.3f}", f"{r['analytic_all_to_all'] / 1e6:.3f}",
                          f"{total / r['analytic_all_to_all']:.2f}", f"{total / base:.2f}x")
    Console(width=160).print(table)


if __name__ == "__main__":
    if ARGS.traffic_json:
        traffic_child(ARGS)
    elif ARGS.traffic:
        traffic(ARGS)
    else:
        main(ARGS)
