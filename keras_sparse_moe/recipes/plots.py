"""Figures of a training run (matplotlib, non-interactive Agg backend).

- `plot_training_curves`: loss and accuracy per epoch (training and
  validation) and, for MoE models, the routing statistics that
  `RoutingStatistics` logged (load imbalance, dropped fraction), read from
  the `CSVLogger` file of the run.
- `plot_routing_heatmap`: for each MoE layer, the share of each class's
  tokens sent to each expert (rows: classes, columns: experts), as in the
  routing figures of V-MoE (Riquelme et al. 2021,
  https://arxiv.org/abs/2106.05974).

- `plot_run`: both figures of a finished training run, into its output
  directory under the recipes' file names.

All write PNG files atomically.
"""

import math
import os

import numpy as np

from keras_sparse_moe.recipes.run_state import CURVES_FILE
from keras_sparse_moe.recipes.run_state import HEATMAP_FILE
from keras_sparse_moe.recipes.run_state import LOG_FILE
from keras_sparse_moe.utils.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    plt = _pyplot()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_training_curves(log, path, title=None):
    """Plot loss / accuracy (and MoE routing statistics when logged) per epoch.

    Args:
        log: path of a `CSVLogger` file, or a dict `{metric: values}` such as
            `History.history`.
        path: output PNG file.
        title: optional figure title.

    Returns:
        `path`, or None when there is nothing to plot.

    Example:
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_training_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, out) == out
    True
    """
    if isinstance(log, (str, os.PathLike)):
        from keras_sparse_moe.recipes.training import read_log

        log = read_log(log) if os.path.isfile(log) else {}
    columns = {k: np.asarray(v, dtype=float) for k, v in dict(log).items()}
    if not columns or not any(len(v) for v in columns.values()):
        return None
    epochs = np.arange(max(len(v) for v in columns.values())) + 1
    panels = [("loss", ["loss", "val_loss"]), ("accuracy", ["accuracy", "val_accuracy"])]
    routing = [("load imbalance (1 = balanced)", "moe/load_imbalance"),
               ("dropped fraction", "moe/dropped_fraction")]
    if any(key in columns for _, key in routing):
        panels.append(("MoE routing (training)", [key for _, key in routing]))
    panels = [(name, [k for k in keys if k in columns]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            values = columns[key]
            ax.plot(epochs[: len(values)], values, label=key.replace("moe/", ""))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_routing_heatmap(routing, class_names, path, title=None):
    """Heatmaps of the share of each class's tokens routed to each expert.

    Args:
        routing: `{layer name: {"by_class": (classes, experts) matrix, ...}}`
            as returned by `routing_by_class` (or stored in `metrics.json`).
        class_names: names of the rows (classes).
        path: output PNG file.
        title: optional figure title.

    Returns:
        `path`, or None when `routing` is empty.

    Example:
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "routing.png")
    >>> routing = {"encoder_block_1/moe": {"by_class": [[0.5, 0.5], [1.0, 0.0]]}}
    >>> plot_routing_heatmap(routing, ["a", "b"], out) == out
    True
    """
    if not routing:
        return None
    plt = _pyplot()
    names = list(routing)
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    first = np.asarray(routing[names[0]]["by_class"], dtype=float)
    num_classes, num_experts = first.shape
    cell = 0.42
    fig, axes = plt.subplots(
        rows, columns,
        figsize=(columns * (1.6 + cell * num_experts), rows * (1.2 + cell * num_classes)),
        squeeze=False,
    )
    labels = [str(c) for c in (class_names or range(num_classes))]
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        matrix = np.asarray(routing[name]["by_class"], dtype=float)
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6),
                          aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("class")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        ax.set_yticklabels(labels[: matrix.shape[0]], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(
        (title + ": " if title else "") + "share of each class's tokens sent to each expert",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_run(output_dir, routing, class_names, title=None, heatmap_title=None):
    """Draw a finished training run's figures into `output_dir`: the
    training curves of its `log.csv` (`training_curves.png`) and the routing
    heatmap (`routing_heatmap.png`).

    Args:
        output_dir: the run's output directory.
        routing: routing statistics by class, as for `plot_routing_heatmap`
            (empty or None: no heatmap).
        class_names: names of the classes.
        title: title of the curves (and of the heatmap, unless
            `heatmap_title` is given).
        heatmap_title: optional title of the heatmap.

    Returns:
        A dict of the figures written: `"training_curves"` and / or
        `"routing_heatmap"`, each a path.

    Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> routing = {"encoder_block_1/moe": {"by_class": [[0.5, 0.5], [1.0, 0.0]]}}
    >>> sorted(plot_run(run, routing, ["a", "b"]))  # no log.csv: no curves
    ['routing_heatmap']
    """
    figures = {}
    curves = os.path.join(output_dir, CURVES_FILE)
    if plot_training_curves(os.path.join(output_dir, LOG_FILE), curves, title=title):
        figures["training_curves"] = curves
    heatmap = plot_routing_heatmap(routing, class_names, os.path.join(output_dir, HEATMAP_FILE),
                                   title=heatmap_title or title)
    if heatmap:
        figures["routing_heatmap"] = heatmap
    return figures
