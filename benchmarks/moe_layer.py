"""SparseMoE speed against a FLOP-matched dense FFN and keras-hub's Mixtral
MoE block, on the current Keras backend (set KERAS_BACKEND).

    KERAS_BACKEND=jax python benchmarks/moe_layer.py
    KERAS_BACKEND=tensorflow python benchmarks/moe_layer.py --repeats 9
    KERAS_BACKEND=torch python benchmarks/moe_layer.py --quick

Every case is one layer in a `keras.Model`, trained with `train_on_batch`
(MSE loss, one SGD update) and run with `predict_on_batch`; both compiled
with XLA on JAX and TensorFlow (`jit_compile=True`), eager on PyTorch (see
`--jit`). After warmup the cases are measured interleaved (one train step and
one predict call of every case per round, order rotated every round) so that
load from other processes hits them alike; medians over rounds are reported,
and ratios are medians of per-round ratios. Wall-clock and process CPU time
are both reported: on a shared machine CPU time (work done, summed over
threads) is the steadier of the two. The Mixtral block is measured in a
second phase against the SparseMoE models only, because its very large
intermediates slow down whatever runs after it.

Cases, all with 2 active experts of intermediate width `--hidden`, on a
(batch, tokens, dim) input:

- `dense_ffn`: Dense(2 * hidden) -> gelu -> Dense(dim), the same active
  FLOPs as a top-2 MoE with perfectly balanced experts and no spare capacity.
- `moe_default`: `SparseMoE(E, hidden, top_k=2)` with its defaults, i.e.
  one routing group per example (`tokens` tokens) and capacity factor 1.25.
  Capacity rounding makes its expert FLOPs 1.29-1.48 x `dense_ffn`.
- `moe_batch_group`: the same layer routing the whole batch as one group
  (`group_size = batch * tokens`) with capacity factor 1.0, as in V-MoE-style
  training; its expert slots equal the routed assignments (E * C = 2 * B * T).
- `moe_dropless` (`--configs dropless`): `SparseMoE(E, hidden, top_k=2,
  capacity_factor=None)`, dropless token choice with its default
  `dropless_impl="auto"`: on JAX and PyTorch the assignments are sorted by
  expert and every expert multiplies only its own tokens (FLOPs of the routed
  assignments, like `dense_ffn`); on TensorFlow it is the padded path.
- `moe_dropless_padded` (`--configs dropless_padded`): the same layer with
  `dropless_impl="padded"`: every expert gets a buffer of a whole group
  (65 tokens), `E / 2` times the routed FLOPs. For contrast; slow at large E,
  and its multi-GB intermediates slow down the cases run after it, so
  measure it in a run of its own.
- `experts_only`: the `Experts` layer alone on already dispatched, perfectly
  balanced slots (E, 2 * B * T / E, dim): no router, no gathers. The floor any
  routed implementation can reach; it grows with E because the expert weights
  (and their gradients and updates) grow with E.
- `mixtral`: keras-hub's `MixtralSparseMoeBlock`, which evaluates every
  expert (gated SiLU MLP, 3 matrices) on every token and masks the result.

Targets: train step of SparseMoE <= 1.25 x `dense_ffn`; predict time at 64
experts <= 1.15 x at 8 experts; >= 12 x faster than `mixtral` at 32 experts.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.layers import Experts  # noqa: E402
from keras_sparse_moe.layers import TokenChoiceRouter  # noqa: E402

TARGET_TRAIN_VS_DENSE = 1.25
TARGET_PREDICT_64_VS_8 = 1.15
TARGET_SPEEDUP_VS_MIXTRAL = 12.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 32, 64],
                        help="numbers of experts to measure")
    parser.add_argument("--mixtral-experts", type=int, nargs="*", default=None,
                        help="numbers of experts at which to also run the (slow) "
                        "Mixtral block (default: 32 if measured)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=65)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--hidden", type=int, default=768, help="expert intermediate_dim")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--configs", nargs="+", default=["default", "batch_group"],
                        choices=["default", "batch_group", "dropless", "dropless_padded"],
                        help="SparseMoE configurations")
    parser.add_argument("--no-experts-only", dest="experts_only", action="store_false",
                        help="skip the `experts_only` reference case")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="compile steps (jit_compile); auto: on for JAX and "
                        "TensorFlow, off (eager) for PyTorch")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 rounds, 1 warmup step, no Mixtral unless "
                        "--mixtral-experts is given")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.mixtral_experts is None:
        args.mixtral_experts = [32] if 32 in args.experts and not args.quick else []
    if not set(args.mixtral_experts) <= set(args.experts):
        parser.error(f"--mixtral-experts {args.mixtral_experts} must be among "
                     f"--experts {args.experts}.")
    for name in ("batch", "tokens", "dim", "hidden", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; received {getattr(args, name)}.")
    if any(e < 2 for e in args.experts + args.mixtral_experts):
        parser.error("numbers of experts must be >= 2 (top-2 routing).")
    return args


# ----------------------------------------------------------------- the cases
class MixtralBlock(keras.layers.Layer):
    """keras-hub's Mixtral MoE block, returning only its output tensor."""

    def __init__(self, dim, hidden, num_experts, **kwargs):
        super().__init__(**kwargs)
        from keras_hub.src.models.mixtral.mixtral_decoder import MixtralSparseMoeBlock

        self.block = MixtralSparseMoeBlock(
            hidden_dim=dim, intermediate_dim=hidden, num_experts=num_experts, top_k=2
        )

    def build(self, input_shape):
        self.block.build(input_shape)

    def call(self, x, training=False):
        return self.block(x, training=training)[0]


def make_layer(case, num_experts, args):
    if case == "dense_ffn":
        return keras.Sequential(
            [keras.layers.Dense(2 * args.hidden, activation="gelu"),
             keras.layers.Dense(args.dim)],
            name="dense_ffn",
        )
    if case == "moe_default":
        return SparseMoE(num_experts, args.hidden, top_k=2, seed=0)
    if case == "moe_batch_group":
        return SparseMoE(num_experts, args.hidden, top_k=2, seed=0,
                         group_size=args.batch * args.tokens, capacity_factor=1.0)
    if case == "moe_dropless":
        return SparseMoE(num_experts, args.hidden, top_k=2, seed=0, capacity_factor=None)
    if case == "moe_dropless_padded":
        return SparseMoE(num_experts, args.hidden, top_k=2, seed=0, capacity_factor=None,
                         dropless_impl="padded")
    if case == "mixtral":
        return MixtralBlock(args.dim, args.hidden, num_experts)
    if case == "experts_only":
        return Experts(num_experts, args.hidden)
    raise ValueError(case)


def jit_setting(args):
    if args.jit == "auto":
        return keras.backend.backend() != "torch"
    return args.jit == "on"


def experts_only_slots(num_experts, args):
    """Tokens per expert of a perfectly balanced top-2 batch (E * C = 2 * B * T)."""
    return int(np.ceil(2 * args.batch * args.tokens / num_experts))


def make_case(case, num_experts, args):
    """A compiled model with its input and target batches."""
    rng = np.random.default_rng(0)
    if case == "experts_only":
        # The experts alone on already dispatched, perfectly balanced slots:
        # no router, no gathers. The floor any routed MoE can reach.
        shape = (num_experts, experts_only_slots(num_experts, args), args.dim)
    else:
        shape = (args.batch, args.tokens, args.dim)
    inputs = keras.Input(shape[1:], batch_size=shape[0])
    outputs = make_layer(case, num_experts, args)(inputs)
    model = keras.Model(inputs, outputs, name=case)
    optimizer = (keras.optimizers.SGD(0.01) if args.optimizer == "sgd"
                 else keras.optimizers.Adam(1e-4))
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_setting(args))
    x = rng.standard_normal(shape).astype("float32")
    y = rng.standard_normal(shape).astype("float32")
    return model, x, y


def active_flops(case, num_experts, args):
    """Forward multiply-add FLOPs (x2) of the token MLPs, router excluded."""
    tokens = args.batch * args.tokens
    per_expert_token = 2 * 2 * args.dim * args.hidden  # two matmuls
    if case == "dense_ffn":
        return tokens * 2 * per_expert_token
    if case == "mixtral":
        return tokens * num_experts * 3 * per_expert_token // 2
    if case == "experts_only":
        return num_experts * experts_only_slots(num_experts, args) * per_expert_token
    ragged = TokenChoiceRouter(num_experts, capacity_factor=None).uses_ragged_experts(False)
    if case == "moe_dropless" and ragged:
        return tokens * 2 * per_expert_token  # the routed assignments only
    if case in ("moe_dropless", "moe_dropless_padded"):
        return tokens * num_experts * per_expert_token  # a whole group per expert
    group = args.tokens if case == "moe_default" else args.batch * args.tokens
    factor = 1.25 if case == "moe_default" else 1.0
    capacity = min(group, int(np.ceil(group * 2 * factor / num_experts)))
    slots = num_experts * capacity * (tokens // group)
    return slots * per_expert_token


# ------------------------------------------------------------------ measuring
CLOCKS = ("wall", "cpu")


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(cases, args):
    """Seconds per train step and per predict call, per round, of each case.

    Every round runs one train step and one predict call of every case, in an
    order rotated from round to round, so slow phases of a shared machine hit
    all cases alike and ratios can be taken within a round. Both wall-clock
    and process CPU time are recorded: CPU time (the work done, summed over
    threads) is far less sensitive to other processes on a busy machine.

    Returns:
        {(key, "train" | "predict", "wall" | "cpu"): [seconds per round]}.
    """
    for model, x, y in cases.values():
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
            model.predict_on_batch(x)
    keys = list(cases)
    samples = {(key, kind, clock): [] for key in keys for kind in ("train", "predict")
               for clock in CLOCKS}
    for r in range(args.repeats):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            model, x, y = cases[key]
            for kind, step in (("train", lambda: model.train_on_batch(x, y)),
                               ("predict", lambda: model.predict_on_batch(x))):
                for clock, seconds in zip(CLOCKS, timed(step)):
                    samples[(key, kind, clock)].append(seconds)
        print(f"  round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    return samples


def median_ratio(samples, numerator, denominator):
    """Median over rounds of the per-round ratio of two series of timings."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator]))


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        versions["jax"] = jax.__version__
    elif backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    else:
        import torch

        versions["torch"] = torch.__version__
    import keras_hub

    versions["keras_hub"] = keras_hub.__version__
    return os.cpu_count(), cpu, versions


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    backend = keras.backend.backend()
    nproc, cpu, versions = machine_info()
    print(f"backend={backend}  nproc={nproc}  cpu={cpu}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"batch={args.batch} tokens={args.tokens} dim={args.dim} hidden={args.hidden} "
          f"top_k=2 optimizer={args.optimizer} jit={jit_setting(args)} "
          f"repeats={args.repeats} warmup={args.warmup}")
    print("command: " + " ".join([f"KERAS_BACKEND={backend}", "python"] + sys.argv))
    moe_cases = [f"moe_{c}" for c in args.configs]

    # Phase 1: dense and SparseMoE cases. Phase 2 (per Mixtral size): the
    # Mixtral block against the same dense and SparseMoE models. The Mixtral
    # block allocates and streams hundreds of MB per step, which slows the
    # case run after it, so it is kept out of phase 1.
    keys = [(0, "dense_ffn")]
    for num_experts in args.experts:
        keys += [(num_experts, case) for case in moe_cases]
        if args.experts_only:
            keys.append((num_experts, "experts_only"))
    start = time.perf_counter()
    cases = {key: make_case(key[1], key[0], args) for key in keys}
    samples = measure(cases, args)
    mixtral_runs = {}
    for num_experts in args.mixtral_experts:
        phase = [(num_experts, case) for case in moe_cases]
        phase_cases = {key: cases[key] for key in phase}
        phase_cases[(num_experts, "mixtral")] = make_case("mixtral", num_experts, args)
        mixtral_runs[num_experts] = (list(phase_cases), measure(phase_cases, args))
        del phase_cases
    print(f"measured in {time.perf_counter() - start:.0f} s", flush=True)
    report(samples, keys, mixtral_runs, args, moe_cases)
    return samples, mixtral_runs


def report(samples, keys, mixtral_runs, args, moe_cases):
    for clock in CLOCKS:
        print()
        print(f"== {clock} time: medians over rounds; ratios are medians of per-round ratios")
        print_table(samples, keys, args, clock)
        for num_experts, (phase_keys, phase_samples) in mixtral_runs.items():
            print(f"-- Mixtral phase, E={num_experts} ({clock} time)")
            print_table(phase_samples, phase_keys, args, clock)
        print_targets(samples, mixtral_runs, args, moe_cases, clock)


def print_table(samples, keys, args, clock):
    dense = (0, "dense_ffn")
    has_dense = (dense, "train", clock) in samples
    dense_flops = active_flops("dense_ffn", 0, args)
    print(f"{'E':>3} {'case':<20} {'train ms':>9} {'predict ms':>11} "
          f"{'FLOPs/dense':>12}" + (f" {'train/dense':>12} {'predict/dense':>14}"
                                    if has_dense else ""))
    for key in keys:
        e, name = key
        train = statistics.median(samples[(key, "train", clock)])
        predict = statistics.median(samples[(key, "predict", clock)])
        flops = active_flops(name, e, args) / dense_flops
        line = (f"{e or '-':>3} {name:<20} {1e3 * train:>9.1f} {1e3 * predict:>11.1f} "
                f"{flops:>12.2f}")
        if has_dense:
            train_ratio = median_ratio(samples, (key, "train", clock), (dense, "train", clock))
            predict_ratio = median_ratio(samples, (key, "predict", clock),
                                         (dense, "predict", clock))
            line += f" {train_ratio:>12.2f} {predict_ratio:>14.2f}"
        print(line)


def print_targets(samples, mixtral_runs, args, moe_cases, clock):
    dense = (0, "dense_ffn")

    def ratio(runs, num_key, num_kind, den_key, den_kind):
        return median_ratio(runs, (num_key, num_kind, clock), (den_key, den_kind, clock))

    print(f"Targets ({clock} time):")
    for case in moe_cases:
        ratios = {e: ratio(samples, (e, case), "train", dense, "train") for e in args.experts}
        worst = max(ratios.values())
        detail = ", ".join(f"E={e}: {r:.2f}" for e, r in ratios.items())
        ok = "MET" if worst <= TARGET_TRAIN_VS_DENSE else "missed"
        print(f"  (a) {case}: train / dense_ffn {detail} "
              f"(target <= {TARGET_TRAIN_VS_DENSE} at every E) {ok}")
    if 8 in args.experts and 64 in args.experts:
        for case in moe_cases:
            r = ratio(samples, (64, case), "predict", (8, case), "predict")
            ok = "MET" if r <= TARGET_PREDICT_64_VS_8 else "missed"
            print(f"  (b) {case}: predict E=64 / E=8 = {r:.2f} "
                  f"(target <= {TARGET_PREDICT_64_VS_8}) {ok}")
    else:
        print("  (b) needs --experts 8 64")
    for e, (_, runs) in mixtral_runs.items():
        mixtral = (e, "mixtral")
        for case in moe_cases:
            train = ratio(runs, mixtral, "train", (e, case), "train")
            predict = ratio(runs, mixtral, "predict", (e, case), "predict")
            ok = "MET" if min(train, predict) >= TARGET_SPEEDUP_VS_MIXTRAL else "missed"
            tag = "(c)" if e == 32 else "   "
            print(f"  {tag} {case} at E={e}: mixtral / moe = {train:.1f} x (train), "
                  f"{predict:.1f} x (predict) (target >= {TARGET_SPEEDUP_VS_MIXTRAL}) {ok}")


if __name__ == "__main__":
    main()
