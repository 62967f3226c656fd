"""Keras callbacks for MoE training."""

import keras
import numpy as np

from keras_sparse_moe.layers.sparse_moe import SparseMoE


def moe_layers(model):
    """All `SparseMoE` layers of a model, in traversal order."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, SparseMoE)]


class RoutingStatistics(keras.callbacks.Callback):
    """Adds routing statistics of every `SparseMoE` layer to the logs.

    At the end of each epoch (and, with `every_batch=True`, of each training
    batch) it reads the statistics the layers recorded during their last
    training call and adds, per layer `NAME`:
    `NAME/dropped_fraction` (share of assignments over capacity) and
    `NAME/load_imbalance` (`E * max_e expert_fraction`, 1 is perfect), plus
    the means over layers `moe/dropped_fraction` and `moe/load_imbalance`.
    `History`, `CSVLogger` and TensorBoard then record them.

    Args:
        every_batch: bool, also add them to the batch logs.

    Example:
    >>> cb = RoutingStatistics()
    >>> # model.fit(x, y, callbacks=[cb]); model.history.history["moe/dropped_fraction"]
    """

    def __init__(self, every_batch=False):
        super().__init__()
        self.every_batch = bool(every_batch)

    def _stats(self):
        logs = {}
        dropped, imbalance = [], []
        for layer in moe_layers(self.model):
            if not layer.built:
                continue
            d = float(keras.ops.convert_to_numpy(layer.stat_dropped_fraction))
            f = keras.ops.convert_to_numpy(layer.stat_expert_fraction)
            i = float(layer.num_experts * np.max(f))
            logs[f"{layer.name}/dropped_fraction"] = d
            logs[f"{layer.name}/load_imbalance"] = i
            dropped.append(d)
            imbalance.append(i)
        if dropped:
            logs["moe/dropped_fraction"] = float(np.mean(dropped))
            logs["moe/load_imbalance"] = float(np.mean(imbalance))
        return logs

    def on_train_batch_end(self, batch, logs=None):
        if self.every_batch and logs is not None:
            logs.update(self._stats())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._stats())
