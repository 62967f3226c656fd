"""The design document's section 5.2 example, corrected, with `SparseMoE`.

The document trains a "sparse MoE" with 3 modules on 1000 random samples of 5
features with 3 classes and evaluates it on 100 more. This recipe keeps that
set-up but uses `keras_sparse_moe.SparseMoE`: a router (the document's
"module selection") sends every sample to `top_k` of 3 experts ("module
computation"), and the selected experts' outputs are summed with the router's
gates ("result fusion"). See docs/seed-example.md for the defects of the
original code.

Two data sets are trained, each with a fresh model:

- `"random"`: the document's data, random features and *random labels*.
  There is nothing to learn, so test accuracy stays near chance (1/3).
- `"learnable"`: the same random features, labelled by
  `argmax(x @ A + b)` for a fixed random `A` (5, 3) and `b` (3,): a rule the
  model can learn, so test accuracy rises far above chance.

Run: `python recipes/seed_example.py [--epochs 30] [--seed 0]`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sparse_moe import SparseMoE  # noqa: E402

NUM_FEATURES = 5  # the document's input_shape=(5,)
NUM_MODULES = 3  # the document's num_modules=3: one expert per module
NUM_CLASSES = 3  # the document's labels: np.random.randint(0, 3)
NUM_TRAIN = 1000
NUM_TEST = 100
# Samples routed together. The expert capacity is computed per group, so the
# batch size must be a multiple of it (1000 and 100 are multiples of 50).
GROUP_SIZE = 50
BATCH_SIZE = 50


def make_data(kind, seed):
    """`(x_train, y_train, x_test, y_test)` for `kind` "random" or "learnable".

    Features are uniform in [0, 1) as in the document. "random" labels are
    uniform in {0, 1, 2}; "learnable" labels are `argmax(x @ A + b)` with a
    fixed random `A`, `b` chosen so the three classes are about equally
    frequent.
    """
    if kind not in ("random", "learnable"):
        raise ValueError(f"Argument `kind` must be 'random' or 'learnable'; received {kind!r}.")
    rng = np.random.default_rng(seed)
    x = rng.random((NUM_TRAIN + NUM_TEST, NUM_FEATURES)).astype("float32")
    if kind == "random":
        y = rng.integers(0, NUM_CLASSES, NUM_TRAIN + NUM_TEST)
    else:
        a = rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype("float32")
        scores = x @ a
        # Centre each score so no class dominates.
        b = -np.median(scores, axis=0)
        y = np.argmax(scores + b, axis=-1)
    y = y.astype("int32")
    return x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:], y[NUM_TRAIN:]


def build_model(top_k=1, intermediate_dim=32, hidden_dim=16, seed=None):
    """Dense embedding -> residual SparseMoE (3 experts) -> Dense(3) logits.

    `SparseMoE` maps `(batch, dim)` to `(batch, dim)`, so the 5 features are
    first embedded in `hidden_dim`; the MoE output is added to its input (a
    sample that no expert kept still reaches the classifier), and a linear
    head gives the 3 class logits (one softmax, inside the loss).
    """
    inputs = keras.Input(shape=(NUM_FEATURES,), name="features")
    x = keras.layers.Dense(hidden_dim, name="embedding")(inputs)
    moe = SparseMoE(
        num_experts=NUM_MODULES,
        intermediate_dim=intermediate_dim,
        top_k=top_k,
        group_size=GROUP_SIZE,
        seed=seed,
        name="moe",
    )
    x = keras.layers.Add(name="residual")([x, moe(x)])
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    model = keras.Model(inputs, outputs, name="seed_sparse_moe")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_and_evaluate(kind, epochs, seed, verbose=0):
    """Train a fresh model on `kind` data; return its metrics."""
    x_train, y_train, x_test, y_test = make_data(kind, seed)
    keras.utils.set_random_seed(seed)
    model = build_model(seed=seed)
    history = model.fit(
        x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=verbose
    )
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=BATCH_SIZE, verbose=0)
    stats = model.get_layer("moe").routing_stats(model.get_layer("embedding")(x_test))
    return {
        "train_loss": [float(v) for v in history.history["loss"]],
        "train_accuracy": float(history.history["accuracy"][-1]),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "chance_accuracy": float(np.max(np.bincount(y_test, minlength=NUM_CLASSES)) / len(y_test)),
        "expert_fraction": [float(v) for v in stats["expert_fraction"]],
        "dropped_fraction": stats["dropped_fraction"],
        "capacity": stats["capacity"],
    }


def main(epochs=30, seed=0, verbose=0):
    """Train on the document's random data and on a learnable variant.

    Args:
        epochs: int >= 1, epochs of each of the two trainings.
        seed: int, seed of the data and of the weights.
        verbose: Keras `fit` verbosity.

    Returns:
        `{"backend", "seconds", "random": {...}, "learnable": {...}}`, each
        inner dict with the per-epoch `train_loss`, final `train_accuracy`,
        `test_loss`, `test_accuracy`, the `chance_accuracy` of always
        predicting the most frequent test class, and routing statistics on
        the test set (`expert_fraction`, `dropped_fraction`, `capacity`).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Argument `epochs` must be an int >= 1; received {epochs!r}.")
    start = time.perf_counter()
    results = {"backend": keras.backend.backend()}
    for kind in ("random", "learnable"):
        results[kind] = train_and_evaluate(kind, epochs, seed, verbose)
    results["seconds"] = time.perf_counter() - start
    return results


def _print(results):
    print(f"backend: {results['backend']}, {results['seconds']:.1f} s")
    for kind in ("random", "learnable"):
        r = results[kind]
        print(
            f"{kind:>9}: train loss {r['train_loss'][0]:.3f} -> {r['train_loss'][-1]:.3f}, "
            f"test accuracy {r['test_accuracy']:.2f} (chance {r['chance_accuracy']:.2f}), "
            f"expert load {np.round(r['expert_fraction'], 2).tolist()}, "
            f"dropped {r['dropped_fraction']:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _print(main(epochs=args.epochs, seed=args.seed))
