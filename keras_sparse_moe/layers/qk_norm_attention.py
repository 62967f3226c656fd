"""Multi-head attention with LayerNorm on the projected queries and keys."""

import keras

from keras_sparse_moe.utils.validation import check_float


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class QKNormMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with query-key normalisation.

    After the query and key projections, each head's query and key vectors
    go through a LayerNorm over the head dimension with a learned scale and
    no offset (`query_norm`, `key_norm`, weights of shape `(key_dim,)`,
    shared by the heads), before the `1/sqrt(key_dim)` scaling and the dot
    product (Dehghani et al. 2023, https://arxiv.org/abs/2302.05442; flax's
    `MultiHeadDotProductAttention(normalize_qk=True)` with its `query_ln` /
    `key_ln`, which vmoe's Soft MoE models use). Values are not normalised.

    Args:
        num_heads, key_dim, ...: as `keras.layers.MultiHeadAttention`.
        qk_norm_epsilon: float > 0, epsilon of both LayerNorms (flax: 1e-6).

    Example:
    >>> import numpy as np
    >>> attention = QKNormMultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(attention(x, x).shape), tuple(attention.query_norm.gamma.shape)
    ((2, 5, 8), (4,))
    """

    def __init__(self, num_heads, key_dim, qk_norm_epsilon=1e-6, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.qk_norm_epsilon = check_float(
            "qk_norm_epsilon", qk_norm_epsilon, minimum=0.0, strict=True
        )

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.query_norm = keras.layers.LayerNormalization(
            epsilon=self.qk_norm_epsilon, center=False, dtype=self.dtype_policy,
            name="query_norm",
        )
        self.key_norm = keras.layers.LayerNormalization(
            epsilon=self.qk_norm_epsilon, center=False, dtype=self.dtype_policy,
            name="key_norm",
        )
        # Projected queries and keys are (batch, positions, heads, key_dim).
        self.query_norm.build((None, None, self.num_heads, self.key_dim))
        self.key_norm.build((None, None, self.num_heads, self.key_dim))

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        return super()._compute_attention(
            self.query_norm(query), self.key_norm(key), value, attention_mask, training,
            return_attention_scores, **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config["qk_norm_epsilon"] = self.qk_norm_epsilon
        return config
