"""The MoE placement grammar, shared by every encoder of the zoo; it lives in
`keras_sparse_moe.models.moe_layer_schedule` (this path is kept for
existing imports)."""

from keras_sparse_moe.models.moe_layer_schedule import block_moe_arguments
from keras_sparse_moe.models.moe_layer_schedule import resolve_moe_layers
from keras_sparse_moe.models.moe_layer_schedule import split_moe_kwargs

__all__ = ["block_moe_arguments", "resolve_moe_layers", "split_moe_kwargs"]
