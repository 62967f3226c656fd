"""The version of keras-sparse-moe (`keras_sparse_moe.__version__`)."""

__version__ = "0.1.0"
