"""Time and memory of `convert_vmoe` on a V-MoE checkpoint, side by side with
the checkpoint's size.

Usage:
    python benchmarks/convert_vmoe.py CHECKPOINT [--preset NAME] [--backend B]

CHECKPOINT is a vmoe checkpoint (prefix, index, shard or directory), e.g.
the random S/32 tree that `tools/write_vmoe_s32_checkpoint.py` writes with
vmoe's own code (the tree of the published
vmoe_s32_last2_ilsvrc2012_randaug_light1). The conversion runs in a child
process; the report is its wall time and its peak resident memory above
what the same child holds after importing the package (Keras and the
backend), as a ratio to the checkpoint's bytes on disk.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
import keras_sparse_moe  # noqa: F401  (Keras, the backend and the registry)
from keras_sparse_moe.convert import convert_vmoe
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model = convert_vmoe(sys.argv[1], sys.argv[2], preset=sys.argv[3] or None)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "base_kib": base, "peak_kib": peak,
                  "params": int(model.count_params())}))
"""


def checkpoint_bytes(path):
    """Bytes of the checkpoint's files (a prefix's index and shards, a file,
    or every vmoe file of a directory)."""
    if os.path.isdir(path):
        files = [f for f in glob.glob(os.path.join(path, "*"))
                 if ".data-" in f or f.endswith((".index", ".msgpack"))]
    elif os.path.isfile(path):
        prefix = path.rsplit(".index", 1)[0] if path.endswith(".index") else path.split(".data-")[0]
        files = glob.glob(prefix + ".index") + glob.glob(prefix + ".data-*") or [path]
    else:
        files = glob.glob(path + ".index") + glob.glob(path + ".data-*")
    return sum(os.path.getsize(f) for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    args = parser.parse_args()
    size = checkpoint_bytes(args.checkpoint)
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, KERAS_BACKEND=args.backend, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-c", CHILD, args.checkpoint, os.path.join(out, "preset"),
             args.preset], env=env, capture_output=True, text=True, check=False)
        if result.returncode:
            sys.exit(result.stderr.strip().splitlines()[-1])
        report = json.loads(result.stdout.strip().splitlines()[-1])
    extra = (report["peak_kib"] - report["base_kib"]) * 1024
    print(f"backend            {args.backend}")
    print(f"parameters         {report['params']:,}")
    print(f"checkpoint         {size / 2**20:,.0f} MiB")
    print(f"conversion         {report['seconds']:.1f} s")
    print(f"peak memory added  {extra / 2**20:,.0f} MiB = {extra / size:.2f}x the checkpoint")


if __name__ == "__main__":
    main()
