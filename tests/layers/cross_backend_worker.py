"""Run fixed-weight SparseMoE models under the current Keras backend.

Used by `test_cross_backend.py` in a subprocess per backend:
`KERAS_BACKEND=jax python tests/layers/cross_backend_worker.py out.npz`.
Weights and inputs come from NumPy with fixed seeds, so every backend runs
exactly the same computation; the outputs are saved to an `.npz` file.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe.layers import SparseMoE  # noqa: E402

CASES = {
    "token_choice": dict(router="token_choice", top_k=2, capacity_factor=0.75),
    "token_choice_gated": dict(router="token_choice", top_k=2, gated=True,
                               activation="silu", renormalize_gates=True,
                               batch_priority=False, capacity_factor=0.5),
    "expert_choice": dict(router="expert_choice", top_k=2, capacity_factor=1.0),
    "soft": dict(router="soft", slots_per_expert=2),
}


def run_all():
    """One model with a SparseMoE branch per case (a single predict call)."""
    x = np.random.default_rng(2024).normal(size=(3, 8, 6)).astype("float32")
    inputs = keras.Input((8, 6))
    names = sorted(CASES)
    outputs = [SparseMoE(num_experts=4, intermediate_dim=10, name=name,
                         **CASES[name])(inputs) for name in names]
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    model.set_weights(
        [(rng.normal(size=w.shape) * 0.5).astype(w.dtype) for w in model.get_weights()]
    )
    predictions = model.predict(x, verbose=0)
    return {"x": x, **dict(zip(names, predictions))}


if __name__ == "__main__":
    result = run_all()
    result["backend"] = np.asarray(keras.backend.backend())
    np.savez(sys.argv[1], **result)
