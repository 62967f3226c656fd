"""Expert parallelism on simulated devices: parameter memory per device and
step time, 1 device vs N (JAX backend, CPU devices simulated by XLA).

    python benchmarks/expert_parallel.py                # 8 devices, 32 experts
    python benchmarks/expert_parallel.py --devices 4 --experts 16 --steps 5

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

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.distribution import expert_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import is_expert_variable_path  # noqa: E402


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


if __name__ == "__main__":
    main(ARGS)
