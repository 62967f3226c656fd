"""Tasks shuffle array inputs every epoch and do not warn about `shuffle`."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_sparse_moe.models.shuffled_fit import ShuffledFitMixin
from tests import configs


class _Capture:
    """Stands in for keras-hub's `fit`: keeps what it is given."""

    def fit(self, x=None, y=None, *args, **kwargs):
        self.given = (x, y, args, kwargs)


class _Task(ShuffledFitMixin, _Capture):
    pass


def _orders(dataset, epochs=2):
    return [[int(v) for x, _ in dataset for v in np.asarray(x)[:, 0]] for _ in range(epochs)]


@pytest.mark.single_backend
def test_arrays_are_shuffled_every_epoch_and_datasets_pass_without_shuffle():
    task = _Task()
    x = np.arange(12, dtype="float32")[:, None]
    task.fit(x, x, batch_size=4, epochs=2)
    dataset, y, _, kwargs = task.given
    assert y is None and kwargs == {"shuffle": False, "epochs": 2}
    first, second = _orders(dataset)
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != list(range(12)) and first != second
    assert [len(np.asarray(x)) for x, _ in dataset] == [4, 4, 4]
    # shuffle=False keeps keras-hub's path and order; a dataset shuffles itself.
    task.fit(x, x, batch_size=4, shuffle=False)
    assert task.given[0] is x and task.given[3] == {"shuffle": False, "batch_size": 4}
    ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(4)
    task.fit(ds)
    assert task.given[0] is ds and task.given[3] == {"shuffle": False}
    task.fit(ds, shuffle=True)  # asked for: Keras says it ignores it
    assert task.given[3] == {"shuffle": True}


@pytest.mark.single_backend("torch")  # Keras's warning is the same on every backend
def test_classifier_fit_gives_no_shuffle_warning():
    from keras_sparse_moe.models import MoEViTBackbone
    from keras_sparse_moe.models import MoEViTImageClassifier
    from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor

    backbone = MoEViTBackbone(**configs.MOE_VIT)
    model = MoEViTImageClassifier(
        backbone, num_classes=configs.NUM_CLASSES,
        preprocessor=MoEViTImageClassifierPreprocessor.for_backbone(backbone, scale=1 / 16))
    images = configs.images(8, configs.MOE_VIT["image_shape"])
    labels = np.arange(8) % configs.NUM_CLASSES
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
        model.fit(dataset, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)]
