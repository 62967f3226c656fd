"""Deterministic kernels make a seeded training run repeat bit for bit.

Enabling them is process-wide and cannot be undone, so the runs happen in a
subprocess (on the backend under test)."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
import keras, numpy as np
from keras_sparse_moe.recipes import TrainingConfig
from keras_sparse_moe.recipes.classifier import train_classifier

DETERMINISTIC = sys.argv[2] == "1"
from tests.configs import MOE_VIT_OVERRIDES as TINY  # the script runs from the repository root
weights = []
for run in ("a", "b"):
    _, model = train_classifier(
        "moe_vit_tiny", "digits", sys.argv[1] + "/" + run,
        TrainingConfig(epochs=2, max_batches=3, batch_size=32, deterministic=DETERMINISTIC),
        overrides=TINY, verbose=0, plots=False, save_preset=False,
        single_image_latency=False, routing_examples=0,
        run_eagerly=keras.backend.backend() != "jax", return_model=True)
    weights.append([np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights])
from tensorflow.python.framework import config as tf_config  # no public getter
flags = {"tensorflow": tf_config.is_op_determinism_enabled()}
if keras.backend.backend() == "torch":
    import torch
    flags["torch"] = torch.are_deterministic_algorithms_enabled()
same = all(np.array_equal(a, b) for a, b in zip(*weights))
print(json.dumps({"flags": flags, "identical": same, "count": len(weights[0])}))
"""


def test_deterministic_runs_repeat_bit_for_bit(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "1"], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(report["flags"].values()), report
    assert report["identical"] and report["count"] > 10, report
