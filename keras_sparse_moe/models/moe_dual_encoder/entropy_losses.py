"""LIMoE entropy regularisers of the router distribution (Mustafa et al.
2022, arXiv:2206.02770, Sec. 2.2), as pure functions.

For the router probabilities `p(experts | x_i)` of the `n` tokens of one
modality:

- local entropy `(1/n) * sum_i H(p(. | x_i))`: minimising it makes each
  token's routing decisive;
- global entropy `-H((1/n) * sum_i p(. | x_i))`: minimising it spreads the
  modality's tokens over many experts. With a threshold `tau` it becomes
  `max(0, tau - H(mean_i p(. | x_i)))`: no penalty once the modality's
  average routing distribution has at least `tau` nats of entropy (about
  `exp(tau)` experts in use).

`H(p) = -sum_e p_e log p_e` in nats. Masked tokens (e.g. text padding) are
left out of every mean.
"""

from keras import ops

_EPS = 1e-9


def _entropy(probs):
    probs = ops.cast(probs, "float32")
    return -ops.sum(probs * ops.log(ops.maximum(probs, _EPS)), axis=-1)


def _flatten(probs, mask):
    """Probabilities as (tokens, num_experts) and float token weights (tokens, 1)."""
    probs = ops.cast(probs, "float32")
    probs = ops.reshape(probs, (-1, probs.shape[-1]))
    if mask is None:
        weights = ops.ones_like(probs[:, :1])
    else:
        weights = ops.reshape(ops.cast(mask, "float32"), (-1, 1))
    return probs, weights


def local_entropy(probs, mask=None):
    """Mean over (unmasked) tokens of the entropy of each token's routing.

    Args:
        probs: (..., num_experts) router probabilities.
        mask: optional, with as many elements as `probs.shape[:-1]` in the
            same order (e.g. (batch, tokens) for probs (batch, tokens, E) or
            (groups, group_size, E)); 1/True for tokens that count.

    Returns:
        A float32 scalar.

    Example:
    >>> import numpy as np
    >>> float(local_entropy(np.array([[0.5, 0.5], [1.0, 0.0]], "float32")))  # doctest: +ELLIPSIS
    0.3465...
    """
    probs, weights = _flatten(probs, mask)
    total = ops.sum(ops.expand_dims(_entropy(probs), -1) * weights)
    return total / ops.maximum(ops.sum(weights), 1.0)


def global_entropy(probs, mask=None):
    """Entropy of the average routing distribution of the (unmasked) tokens.

    Example:
    >>> import numpy as np
    >>> float(global_entropy(np.array([[1.0, 0.0], [0.0, 1.0]], "float32")))  # doctest: +ELLIPSIS
    0.6931...
    """
    probs, weights = _flatten(probs, mask)
    mean_probs = ops.sum(probs * weights, axis=0) / ops.maximum(ops.sum(weights), 1.0)
    return _entropy(mean_probs)


def global_entropy_loss(probs, mask=None, threshold=None):
    """LIMoE global loss: `-H(mean p)`, or `max(0, threshold - H(mean p))`.

    Args:
        probs: (..., num_experts) router probabilities.
        mask: optional token mask (see `local_entropy`).
        threshold: None (no hinge) or a float in nats.

    Example:
    >>> import numpy as np
    >>> p = np.array([[1.0, 0.0], [1.0, 0.0]], "float32")
    >>> float(global_entropy_loss(p, threshold=0.5))
    0.5
    """
    entropy = global_entropy(probs, mask)
    if threshold is None:
        return -entropy
    return ops.maximum(float(threshold) - entropy, 0.0)


def limoe_entropy_loss(probs, mask=None, local_weight=0.0, global_weight=0.0, threshold=None):
    """Weighted sum `local_weight * local + global_weight * global_loss`.

    Returns a float32 scalar (0 when both weights are 0).
    """
    total = ops.zeros((), "float32")
    if local_weight:
        total = total + float(local_weight) * local_entropy(probs, mask)
    if global_weight:
        total = total + float(global_weight) * global_entropy_loss(probs, mask, threshold)
    return total
