"""Expert parallelism over two JAX processes on this machine (CPU, gloo).

Run by tests/distribution/test_multi_process.py:

    python mp_worker.py train PROCESS_ID PORT OUT_DIR   # one of 2 processes, 4 devices each
    python mp_worker.py reference OUT_DIR               # 1 process, 8 devices
    python mp_worker.py reload OUT_DIR                  # 1 process, 1 device

`train` trains a small MoE-ViT with 8-way expert parallelism spanning both
processes, checkpoints it with `keras.callbacks.OrbaxCheckpoint` (when
orbax-checkpoint is installed) and writes its losses and predictions;
`reference` trains the same model on the same global batches in one
process; `reload` loads the checkpoint without any distribution and writes
its predictions.
"""

import os
import sys

MODE = sys.argv[1]
DEVICES = {"train": 4, "reference": 8, "reload": 1}[MODE]
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe import MoEViTBackbone  # noqa: E402
from keras_sparse_moe import MoEViTImageClassifier  # noqa: E402
from keras_sparse_moe.distribution import data_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import expert_parallel_distribution  # noqa: E402
from keras_sparse_moe.distribution import initialize_processes  # noqa: E402

PROCESSES, GLOBAL_BATCH, STEPS, EPOCHS = 2, 16, 2, 2


def has_orbax():
    try:
        import orbax.checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


def build_model():
    keras.utils.set_random_seed(0)
    backbone = MoEViTBackbone(image_shape=(8, 8, 1), patch_size=2, num_layers=2, num_heads=2,
                              hidden_dim=16, mlp_dim=32, num_experts=8, top_k=2)
    model = MoEViTImageClassifier(backbone, num_classes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data():
    """Global batches; process p feeds rows [p * 8, (p + 1) * 8) of each."""
    rng = np.random.default_rng(0)
    x = rng.random((STEPS * GLOBAL_BATCH, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 4, STEPS * GLOBAL_BATCH).astype("int32")
    x_eval = rng.random((GLOBAL_BATCH, 8, 8, 1), dtype=np.float32)
    return x, y, x_eval


def local_rows(array, process_id):
    local = GLOBAL_BATCH // PROCESSES
    batches = array.reshape((STEPS, GLOBAL_BATCH) + array.shape[1:])
    return batches[:, process_id * local:(process_id + 1) * local].reshape(
        (-1,) + array.shape[1:])


def global_predictions(model, x_local):
    """Predictions for the global batch, gathered to every process."""
    from jax.experimental import multihost_utils

    distribution = keras.distribution.distribution()
    layout = distribution.get_data_layout((GLOBAL_BATCH,) + x_local.shape[1:]).backend_layout
    xs = jax.make_array_from_process_local_data(layout, x_local)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    logits = jax.jit(lambda t, n, a: model.stateless_call(t, n, a)[0])(
        trainable, non_trainable, xs)
    return np.asarray(multihost_utils.process_allgather(logits, tiled=True))


def train(process_id, port, out_dir):
    initialize_processes(f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=process_id)
    x, y, x_eval = data()
    # Each process feeds its own rows (NumPy): no automatic dataset sharding.
    distribution = expert_parallel_distribution(expert_parallel=8, num_experts=8,
                                                auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    model = build_model()
    callbacks = []
    if has_orbax():
        callbacks.append(keras.callbacks.OrbaxCheckpoint(
            os.path.join(out_dir, "checkpoint"), save_freq="epoch", save_weights_only=True))
    history = model.fit(local_rows(x, process_id), local_rows(y, process_id),
                        batch_size=GLOBAL_BATCH // PROCESSES, epochs=EPOCHS, shuffle=False,
                        verbose=0, callbacks=callbacks)
    eval_local = x_eval[process_id * 8:(process_id + 1) * 8]
    predictions = global_predictions(model, eval_local)
    result = {"loss": history.history["loss"], "predictions": predictions.tolist(),
              "devices": jax.device_count(), "local_devices": jax.local_device_count(),
              "processes": jax.process_count(), "orbax": has_orbax()}

    with open(os.path.join(out_dir, f"train_{process_id}.json"), "w") as f:
        json.dump(result, f)


def reference(out_dir):
    x, y, _ = data()
    keras.distribution.set_distribution(
        expert_parallel_distribution(expert_parallel=8, num_experts=8))
    model = build_model()
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"loss": history.history["loss"], "devices": jax.device_count()}, f)


def reload(out_dir):
    _, _, x_eval = data()
    # Under a distribution, Keras gives Orbax the target shardings (here one
    # device); without one, Orbax would look for the devices it saved from.
    with data_parallel_distribution().scope():
        model = build_model()
        model.load_weights(os.path.join(out_dir, "checkpoint"))
    predictions = model.predict(x_eval, batch_size=GLOBAL_BATCH, verbose=0)
    with open(os.path.join(out_dir, "reload.json"), "w") as f:
        json.dump({"predictions": predictions.tolist(), "devices": jax.device_count()}, f)


if __name__ == "__main__":
    if MODE == "train":
        train(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif MODE == "reference":
        reference(sys.argv[2])
    else:
        reload(sys.argv[2])
