"""Encoder block shared by several modalities (LIMoE): per-call routing
groups and per-modality entropy losses."""

import keras

from keras_sparse_moe.layers.encoder_block import MoETransformerEncoderBlock
from keras_sparse_moe.models.moe_dual_encoder.entropy_losses import limoe_entropy_loss
from keras_sparse_moe.utils.validation import check_float

ENTROPY_KEYS = ("local", "global", "threshold")


def normalize_entropy_losses(entropy_losses):
    """Check and normalise `{modality: {"local": w, "global": w,
    "threshold": tau}}`; missing keys default to 0, 0, None."""
    if entropy_losses is None:
        return {}
    if not isinstance(entropy_losses, dict):
        raise ValueError(
            "Argument `entropy_losses` must be None or a dict {modality: {'local': float, "
            f"'global': float, 'threshold': float or None}}; received {entropy_losses!r}."
        )
    result = {}
    for modality, spec in entropy_losses.items():
        if not isinstance(spec, dict) or set(spec) - set(ENTROPY_KEYS):
            raise ValueError(
                f"Argument `entropy_losses[{modality!r}]` must be a dict with keys among "
                f"{list(ENTROPY_KEYS)}; received {spec!r}."
            )
        result[str(modality)] = {
            "local": check_float(f"entropy_losses[{modality!r}]['local']",
                                 spec.get("local", 0.0), minimum=0.0),
            "global": check_float(f"entropy_losses[{modality!r}]['global']",
                                  spec.get("global", 0.0), minimum=0.0),
            "threshold": check_float(f"entropy_losses[{modality!r}]['threshold']",
                                     spec.get("threshold"), minimum=0.0, allow_none=True),
        }
    return result


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class ModalityEncoderBlock(MoETransformerEncoderBlock):
    """`MoETransformerEncoderBlock` that one tower can apply to several
    modalities with the same weights, as in LIMoE.

    Two differences from the parent block when the MLP is a `SparseMoE`:

    - Routing groups follow the token count of each call: with the MoE's
      `group_size=None` a group is the tokens of one example of that call, so
      the same experts encode e.g. 196 image tokens and 16 text tokens (each
      modality with its own static capacity). The block must be built on the
      first modality it sees; later calls may use other token counts.
    - In training it adds the LIMoE entropy losses of the router
      probabilities of the call's modality (see `entropy_losses.py`), leaving
      out tokens where `token_mask` is false (text padding).
    - Tokens where `token_mask` is false (padding) are not routed: they take
      no expert capacity from real tokens with any router, and their MoE
      output is zero.

    Args:
        num_heads, mlp_dim, moe, dropout_rate, attention_dropout,
            stochastic_depth, layer_norm_epsilon, activation: as
            `MoETransformerEncoderBlock`.
        entropy_losses: None or a dict `{modality: {"local": float,
            "global": float, "threshold": float or None}}` of loss weights
            and global-entropy threshold (nats) per modality name.

    Call arguments:
        inputs: (batch, tokens, dim).
        attention_mask: optional bool (batch, tokens, tokens).
        token_mask: optional (batch, tokens), true for real tokens (see
            above).
        modality: None or a modality name; entropy losses apply when it is a
            key of `entropy_losses`.
        training: bool.

    Example:
    >>> import numpy as np
    >>> block = ModalityEncoderBlock(
    ...     num_heads=2, mlp_dim=16, moe={"num_experts": 4, "top_k": 1},
    ...     entropy_losses={"text": {"local": 0.01, "global": 0.01}})
    >>> tuple(block(np.zeros((2, 9, 8), "float32"), modality="image").shape)
    (2, 9, 8)
    >>> tuple(block(np.zeros((2, 4, 8), "float32"), modality="text").shape)
    (2, 4, 8)
    """

    def __init__(self, num_heads, mlp_dim, moe=None, entropy_losses=None, **kwargs):
        super().__init__(num_heads=num_heads, mlp_dim=mlp_dim, moe=moe, **kwargs)
        self.entropy_losses = normalize_entropy_losses(entropy_losses)

    def call(self, inputs, attention_mask=None, token_mask=None, modality=None, training=None):
        return self._residual_branches(
            inputs, attention_mask, training, token_mask=token_mask, modality=modality
        )

    def _sparse_mlp(self, x, training=None, token_mask=None, modality=None):
        # `SparseMoE` routes with the static token count of each call, so one
        # set of experts serves every modality; masked (padding) tokens are
        # not routed. The routing probabilities feed the entropy losses.
        training = bool(training)
        y, routing = self.mlp(
            x, training=training, token_mask=token_mask, return_routing=True
        )
        spec = self.entropy_losses.get(modality)
        if training and spec and (spec["local"] or spec["global"]):
            self.add_loss(
                limoe_entropy_loss(
                    routing["router_probs"],
                    token_mask,
                    local_weight=spec["local"],
                    global_weight=spec["global"],
                    threshold=spec["threshold"],
                )
            )
        return y

    def get_config(self):
        config = super().get_config()
        config["entropy_losses"] = self.entropy_losses or None
        return config
