"""Quick start: a small sparse-MoE transformer on 8x8 handwritten digits.

The 1,797 scikit-learn digits (`sklearn.datasets.load_digits()`, values
0..16) are split in scikit-learn's order: the last 20% (samples 1438..1796)
are the test split and are never trained on; the last 10% of the rest
(samples 1294..1437) are the validation split; samples 0..1293 train.

Model: each image is cut into 16 patches of 2x2 pixels (a stride-2 `Conv2D`,
i.e. one `Dense` per patch) plus learned position embeddings; then
`num_blocks` pre-LayerNorm blocks, each `x + attention(LN(x))` followed by
`x + SparseMoE(LN(x))`, where `SparseMoE` routes every patch token to
`top_k` of `num_experts` expert MLPs; a final LayerNorm, mean pooling over
the tokens and a `Dense(10)` classifier.

Run: `python recipes/quickstart.py` (about a minute on 2 CPU cores). Prints
the backend, the parameter count, the test accuracy, the wall time and,
per MoE layer, the routing statistics on the test split.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402
from keras_sparse_moe.recipes import make_optimizer  # noqa: E402

NUM_CLASSES = 10
TEST_START = 1438  # first test sample: the last 20% of the 1,797 digits
PATCH_SIZE = 2


def load_digits_split(validation_fraction=0.1):
    """The fixed digits split as `{"train"|"validation"|"test": (x, y)}`.

    `x` is float32 (N, 8, 8, 1) with values 0..16, `y` int32 (N,). Test is
    samples 1438..1796 in scikit-learn's order; validation is the last
    `round(validation_fraction * 1438)` samples before it.
    """
    from sklearn.datasets import load_digits

    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            "Argument `validation_fraction` must be in [0, 1); "
            f"received validation_fraction={validation_fraction!r}."
        )
    digits = load_digits()
    images = digits.images.astype("float32")[..., np.newaxis]
    labels = digits.target.astype("int32")
    train_stop = TEST_START - int(round(validation_fraction * TEST_START))
    return {
        "train": (images[:train_stop], labels[:train_stop]),
        "validation": (images[train_stop:TEST_START], labels[train_stop:TEST_START]),
        "test": (images[TEST_START:], labels[TEST_START:]),
    }


def build_model(
    hidden_dim=64,
    num_blocks=2,
    num_heads=4,
    num_experts=4,
    top_k=2,
    intermediate_dim=128,
    capacity_factor=1.25,
    dropout=0.1,
    patch_kernel=2,
    augment=False,
    seed=None,
):
    """The digits classifier; its MoE layers are named `moe_0`, `moe_1`, ...

    Each MoE layer's input is the output of the layer named `moe_norm_<i>`
    (used to compute routing statistics on any data).
    """
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 16.0, name="rescale")(inputs)
    if augment:
        x = keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=seed, name="shift")(x)
    x = keras.layers.Conv2D(
        hidden_dim, patch_kernel, strides=PATCH_SIZE, padding="same", name="patch_embedding"
    )(x)
    num_tokens = (8 // PATCH_SIZE) ** 2
    x = keras.layers.Reshape((num_tokens, hidden_dim), name="tokens")(x)
    positions = keras_hub.layers.PositionEmbedding(num_tokens, name="position_embedding")(x)
    x = keras.layers.Add(name="add_positions")([x, positions])
    for i in range(num_blocks):
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"attention_norm_{i}")(x)
        h = keras.layers.MultiHeadAttention(
            num_heads, hidden_dim // num_heads, dropout=dropout, name=f"attention_{i}"
        )(h, h)
        x = keras.layers.Add(name=f"attention_residual_{i}")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"moe_norm_{i}")(x)
        h = SparseMoE(
            num_experts=num_experts,
            intermediate_dim=intermediate_dim,
            top_k=top_k,
            capacity_factor=capacity_factor,
            dropout=dropout,
            seed=None if seed is None else seed + i,
            name=f"moe_{i}",
        )(h)
        x = keras.layers.Add(name=f"moe_residual_{i}")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_sparse_moe")


def moe_routing_stats(model, images):
    """Routing statistics of every `SparseMoE` layer of `model` on `images`.

    Returns `{layer_name: {"dropped_fraction": float, "expert_fraction":
    list, "load_imbalance": float, "capacity": int}}`.
    """
    stats = {}
    for layer in model.layers:
        if not isinstance(layer, SparseMoE):
            continue
        index = layer.name.rsplit("_", 1)[-1]
        features = keras.Model(model.inputs, model.get_layer(f"moe_norm_{index}").output)
        s = layer.routing_stats(features.predict(images, batch_size=256, verbose=0))
        stats[layer.name] = {
            "dropped_fraction": s["dropped_fraction"],
            "expert_fraction": [float(v) for v in s["expert_fraction"]],
            "load_imbalance": s["load_imbalance"],
            "capacity": s["capacity"],
        }
    return stats


def main(epochs=40, batch_size=32, learning_rate=3e-3, seed=0, verbose=0, **model_kwargs):
    """Train on the digits train split, evaluate on the test split.

    Args:
        epochs: int >= 1.
        batch_size: int >= 1.
        learning_rate: peak AdamW learning rate (warmup then cosine decay).
        seed: int, seeds the weights, dropout and routing noise.
        verbose: Keras `fit` verbosity.
        **model_kwargs: arguments of `build_model` (e.g. `num_experts=8`).

    Returns:
        A dict: `backend`, `params`, `epochs`, `test_accuracy`, `test_loss`,
        `validation_accuracy`, `train_loss` (per epoch), `seconds` (wall
        time of the whole run) and `routing` (see `moe_routing_stats`).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Argument `{name}` must be an int >= 1; received {value!r}.")
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    data = load_digits_split()
    x_train, y_train = data["train"]
    model = build_model(seed=seed, **model_kwargs)
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    model.compile(
        optimizer=make_optimizer(learning_rate, total_steps=steps, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train,
        y_train,
        validation_data=data["validation"],
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )
    test_loss, test_accuracy = model.evaluate(*data["test"], batch_size=256, verbose=0)
    routing = moe_routing_stats(model, data["test"][0])
    return {
        "backend": keras.backend.backend(),
        "params": int(model.count_params()),
        "epochs": epochs,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "validation_accuracy": float(history.history["val_accuracy"][-1]),
        "train_loss": [float(v) for v in history.history["loss"]],
        "seconds": time.perf_counter() - start,
        "routing": routing,
    }


def summary(results):
    """The printed summary of a `main` result."""
    lines = [
        f"backend          {results['backend']}",
        f"parameters       {results['params']:,}",
        f"epochs           {results['epochs']}",
        f"test accuracy    {results['test_accuracy']:.4f} (359 images never trained on)",
        f"wall time        {results['seconds']:.1f} s",
    ]
    for name, s in results["routing"].items():
        load = " ".join(f"{v:.2f}" for v in s["expert_fraction"])
        lines.append(
            f"{name:<16} dropped {s['dropped_fraction']:.3f} of assignments, "
            f"per-expert load [{load}], capacity {s['capacity']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    print(summary(main(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                       verbose=args.verbose)))
