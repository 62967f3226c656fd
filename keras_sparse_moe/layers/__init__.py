"""Sparse mixture-of-experts layers: routers, experts, dispatch and SparseMoE."""

from keras_sparse_moe.layers import activations
from keras_sparse_moe.layers import aux_losses
from keras_sparse_moe.layers import routing_ops
from keras_sparse_moe.layers.expert_choice_router import ExpertChoiceRouter
from keras_sparse_moe.layers.experts import Experts
from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.router_registry import get_router_class
from keras_sparse_moe.layers.router_registry import register_router
from keras_sparse_moe.layers.router_registry import registered_routers
from keras_sparse_moe.layers.encoder_block import MoETransformerEncoderBlock
from keras_sparse_moe.layers.encoder_block import StochasticDepth
from keras_sparse_moe.layers.qk_norm_attention import QKNormMultiHeadAttention
from keras_sparse_moe.layers.soft_router import SoftRouter
from keras_sparse_moe.layers.sparse_moe import SparseMoE
from keras_sparse_moe.layers.token_choice_router import TokenChoiceRouter

__all__ = [
    "activations",
    "aux_losses",
    "routing_ops",
    "ExpertChoiceRouter",
    "Experts",
    "MoETransformerEncoderBlock",
    "QKNormMultiHeadAttention",
    "StochasticDepth",
    "Router",
    "SoftRouter",
    "SparseMoE",
    "TokenChoiceRouter",
    "get_router_class",
    "register_router",
    "registered_routers",
]
