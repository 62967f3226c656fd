"""Auxiliary routing losses (pure functions on router outputs).

All of them take float32 tensors with a leading group axis and return a
scalar averaged over groups:

- `importance_loss`: V-MoE (Riquelme et al. 2021), squared coefficient of
  variation of the per-expert sum of router probabilities.
- `load_loss`: V-MoE, squared coefficient of variation of the smooth
  per-expert load estimated from the noisy gating (needs `noise_std > 0`).
- `load_balancing_loss`: Switch Transformer / GShard,
  `E * sum_e f_e * P_e` (1 when perfectly balanced).
- `router_z_loss`: ST-MoE, mean squared log-partition of the router logits.
"""

import math

from keras import ops

from keras_sparse_moe.layers import routing_ops


def _cv_squared(values, epsilon=1e-10):
    """Squared coefficient of variation along the last axis, mean over the rest."""
    mean = ops.mean(values, axis=-1)
    var = ops.var(values, axis=-1)
    return ops.mean(var / (ops.square(mean) + epsilon))


def importance_loss(probs):
    """V-MoE importance loss.

    Args:
        probs: (G, S, E) router probabilities.

    Returns:
        Scalar: `mean_g CV(sum_s probs[g, s, :])^2`.

    Example:
    >>> import numpy as np
    >>> float(importance_loss(np.full((1, 4, 2), 0.5, "float32")))
    0.0
    """
    return _cv_squared(ops.sum(probs, axis=1))


def load_loss(logits, noisy_logits, noise_std, top_k):
    """V-MoE load loss: CV^2 of the probability that each expert is selected.

    For token `s` and expert `e`, the probability of `e` being among the
    top-k under a fresh draw of the gating noise is
    `1 - Phi((threshold_s - logits[s, e]) / noise_std)`, where `threshold_s`
    is the k-th largest noisy logit of the token. This is smooth in the logits,
    unlike the hard load.

    Args:
        logits: (G, S, E) clean router logits.
        noisy_logits: (G, S, E) logits plus the sampled noise.
        noise_std: Python float > 0, std of the noise added to the logits.
        top_k: int.

    Returns:
        Scalar loss.
    """
    threshold = routing_ops.top_k(noisy_logits, top_k)[0][..., top_k - 1 :]
    noise_needed = (threshold - logits) / noise_std
    p_selected = 1.0 - 0.5 * (1.0 + ops.erf(noise_needed / math.sqrt(2.0)))
    return _cv_squared(ops.sum(p_selected, axis=1))


def load_balancing_loss(probs, expert_index, num_experts):
    """Switch Transformer / GShard load-balancing loss.

    Args:
        probs: (G, S, E) router probabilities.
        expert_index: int (G, S, K) chosen experts (before capacity).
        num_experts: int.

    Returns:
        Scalar `E * sum_e f_e * P_e`, where `f_e` is the fraction of
        assignments routed to `e` and `P_e` the mean router probability.
    """
    assigned = ops.one_hot(expert_index, num_experts, dtype=probs.dtype)
    fraction = ops.mean(ops.sum(assigned, axis=2), axis=1) / ops.cast(
        ops.shape(expert_index)[2], probs.dtype
    )  # (G, E)
    mean_prob = ops.mean(probs, axis=1)  # (G, E)
    return ops.mean(num_experts * ops.sum(fraction * mean_prob, axis=-1))


def router_z_loss(logits):
    """ST-MoE router z-loss: `mean(logsumexp(logits)^2)`.

    Args:
        logits: (G, S, E) router logits.
    """
    return ops.mean(ops.square(ops.logsumexp(logits, axis=-1)))
