"""`fit` for keras-hub tasks that shuffles array inputs every epoch and does
not warn about `shuffle` on datasets."""

import inspect

import keras


def _is_dataset(x):
    """A `tf.data` / grain / torch dataset, a `PyDataset` or a generator."""
    if isinstance(x, keras.utils.PyDataset) or inspect.isgenerator(x):
        return True
    module = type(x).__module__ or ""
    return module.startswith(("tensorflow", "grain", "torch.utils.data")) and not hasattr(
        x, "shape")


def _is_arrays(x):
    """An array or tensor, or a dict / list / tuple of them."""
    leaves = keras.tree.flatten(x) if x is not None else []
    return bool(leaves) and all(hasattr(leaf, "shape") and len(leaf.shape) for leaf in leaves)


def shuffled_dataset(x, y=None, sample_weight=None, batch_size=32):
    """`(x, y, sample_weight)` arrays as a `tf.data.Dataset` that is shuffled
    again every epoch (seeded by `keras.utils.set_random_seed`), in batches.

    Example:
    >>> import numpy as np
    >>> ds = shuffled_dataset(np.arange(6), np.arange(6), batch_size=6)
    >>> first, second = [tuple(int(v) for v in x) for x, _ in ds.repeat(2)]
    >>> sorted(first) == list(range(6)) and first != second
    True
    """
    import tensorflow as tf

    data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
    data = keras.tree.map_structure(keras.ops.convert_to_numpy, data)
    count = len(keras.tree.flatten(data)[0])
    return (tf.data.Dataset.from_tensor_slices(data)
            .shuffle(count, reshuffle_each_iteration=True)
            .batch(batch_size))


class ShuffledFitMixin:
    """For keras-hub tasks (listed before the keras-hub base class).

    keras-hub's `fit` turns arrays into a dataset in their order and passes
    `shuffle=True` on, which Keras then ignores with a warning: array
    inputs were never shuffled. Here `fit` on arrays (the default
    `shuffle=True`) trains on a `tf.data` pipeline that reshuffles them every
    epoch; `fit` on a dataset (which shuffles itself) passes `shuffle=False`
    unless `shuffle` is given. Arrays with `validation_split` keep keras-hub's
    path (its split takes the last rows, before any shuffling).

    Example:
    >>> import warnings
    >>> import keras, numpy as np
    >>> class Regressor(ShuffledFitMixin, keras.Sequential):
    ...     pass
    >>> model = Regressor([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.arange(8, dtype="float32")[:, None]
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     history = model.fit(x, x, batch_size=4, epochs=2, verbose=0)
    >>> len(history.history["loss"]), [str(w.message) for w in caught if "shuffle" in str(w.message)]
    (2, [])
    """

    def fit(self, x=None, y=None, *args, shuffle=None, **kwargs):
        """`keras.Model.fit`; array inputs are shuffled every epoch."""
        if _is_dataset(x):
            return super().fit(x, y, *args, shuffle=bool(shuffle), **kwargs)
        shuffle = True if shuffle is None else shuffle
        if (shuffle and not args and not kwargs.get("validation_split") and _is_arrays(x)
                and (y is None or _is_arrays(y))):
            data = shuffled_dataset(x, y, kwargs.pop("sample_weight", None),
                                    kwargs.pop("batch_size", None) or 32)
            return super().fit(data, shuffle=False, **kwargs)
        return super().fit(x, y, *args, shuffle=shuffle, **kwargs)


__all__ = ["ShuffledFitMixin", "shuffled_dataset"]
