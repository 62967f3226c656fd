"""keras-sparse-moe: sparse mixture-of-experts layers and models for Keras 3."""

from keras_sparse_moe import distribution
from keras_sparse_moe import layers
from keras_sparse_moe.layers import ExpertChoiceRouter
from keras_sparse_moe.layers import Experts
from keras_sparse_moe.layers import SoftRouter
from keras_sparse_moe.layers import SparseMoE
from keras_sparse_moe.layers import TokenChoiceRouter

__version__ = "0.1.0"
from keras_sparse_moe.export import export_litert
