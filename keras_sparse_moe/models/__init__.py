"""Model families: keras-hub style backbones, tasks and their presets.

Every sub-package of this folder is a model family; importing this package
imports each of them once (`import_families`), which registers its presets
with `keras_sparse_moe.presets`. A new family is a new folder: nothing here
needs to name it.
"""

import importlib
import pkgutil

from keras_sparse_moe.models import moe_dual_encoder
from keras_sparse_moe.models import moe_vit
from keras_sparse_moe.models.moe_vit import MoEViTBackbone
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifier
from keras_sparse_moe.models.moe_vit import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models.moe_vit import MoEViTImageConverter


def import_families(path=None, package=None):
    """Import every model family (sub-package) under `path`.

    Args:
        path: list of folders to scan (default: this package's folder).
        package: the dotted package name of those folders (default:
            `"keras_sparse_moe.models"`).

    Returns:
        sorted list of the family names imported.

    Example:
    >>> "moe_vit" in import_families() and "moe_dual_encoder" in import_families()
    True
    """
    path = __path__ if path is None else path
    package = __name__ if package is None else package
    names = sorted(info.name for info in pkgutil.iter_modules(path) if info.ispkg)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


import_families()

__all__ = [
    "import_families",
    "moe_dual_encoder",
    "moe_vit",
    "MoEViTBackbone",
    "MoEViTImageClassifier",
    "MoEViTImageClassifierPreprocessor",
    "MoEViTImageConverter",
]
