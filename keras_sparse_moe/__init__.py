"""keras-sparse-moe: sparse mixture-of-experts layers and models for Keras 3."""

from keras_sparse_moe import data
from keras_sparse_moe import distribution
from keras_sparse_moe import layers
from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter

from keras_sparse_moe.data import DatasetInfo
from keras_sparse_moe.data import build_datasets
from keras_sparse_moe.data import build_image_text_datasets
from keras_sparse_moe.data import load_dataset
from keras_sparse_moe.data import load_digits
from keras_sparse_moe.data import make_pipeline
from keras_sparse_moe.export import export_litert

__version__ = "0.1.0"
