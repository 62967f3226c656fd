"""Independent NumPy reference of the SparseMoE maths, for tests only.

Written from the papers' definitions with plain loops (no shared code with
`keras_sparse_moe`), so that every backend is checked against the same
ground truth. Shapes: G groups, S tokens per group, E experts, C capacity,
K experts per token, D model width.
"""

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def gelu(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    x = np.asarray(x, np.float64)
    return x / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(np.asarray(x, np.float64), 0.0)


ACTIVATIONS = {"gelu": gelu, "silu": silu, "relu": relu}


def capacity(group_size, num_experts, top_k, capacity_factor):
    """`ceil(S * K * cf / E)` clamped to [1, S]; S when dropless."""
    if capacity_factor is None:
        return group_size
    c = math.ceil(group_size * top_k * capacity_factor / num_experts)
    return max(1, min(c, group_size))


# ------------------------------------------------------------------ routers
def token_choice(x, kernel, top_k, cap, batch_priority=True, renormalize=False):
    """Token-choice top-k routing of grouped tokens x (G, S, D).

    Assignments are served choice level by choice level (all first choices,
    then all second choices ...); within a level tokens are served in group
    order, or with Batch Priority Routing by decreasing top-1 router
    probability. An assignment is dropped when its expert already holds `cap`
    tokens.

    Returns a dict with dense `dispatch` and `combine` (G, S, E, C),
    `probs` (G, S, E), `logits`, `expert_index` and `gates` (G, S, K, before
    capacity) and `kept` (G, S, K) bool.
    """
    x = np.asarray(x, np.float64)
    logits = x @ np.asarray(kernel, np.float64)
    probs = softmax(logits)
    g_, s_, e_ = probs.shape
    dispatch = np.zeros((g_, s_, e_, cap))
    combine = np.zeros((g_, s_, e_, cap))
    expert_index = np.zeros((g_, s_, top_k), np.int64)
    gates = np.zeros((g_, s_, top_k))
    kept = np.zeros((g_, s_, top_k), bool)
    for g in range(g_):
        for s in range(s_):
            order = sorted(range(e_), key=lambda e: (-probs[g, s, e], e))[:top_k]
            expert_index[g, s] = order
            gates[g, s] = probs[g, s, order]
            if renormalize:
                gates[g, s] /= gates[g, s].sum()
        if batch_priority:
            tokens = sorted(range(s_), key=lambda s: (-probs[g, s].max(), s))
        else:
            tokens = list(range(s_))
        fill = [0] * e_
        for level in range(top_k):
            for s in tokens:
                e = expert_index[g, s, level]
                if fill[e] < cap:
                    dispatch[g, s, e, fill[e]] = 1.0
                    combine[g, s, e, fill[e]] = gates[g, s, level]
                    kept[g, s, level] = True
                    fill[e] += 1
    return {
        "dispatch": dispatch,
        "combine": combine,
        "probs": probs,
        "logits": logits,
        "expert_index": expert_index,
        "gates": gates,
        "kept": kept,
    }


def expert_choice(x, kernel, cap):
    """Each expert takes the `cap` tokens with the highest router probability."""
    logits = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64)
    probs = softmax(logits)
    g_, s_, e_ = probs.shape
    dispatch = np.zeros((g_, s_, e_, cap))
    combine = np.zeros((g_, s_, e_, cap))
    for g in range(g_):
        for e in range(e_):
            best = sorted(range(s_), key=lambda s: (-probs[g, s, e], s))[:cap]
            for c, s in enumerate(best):
                dispatch[g, s, e, c] = 1.0
                combine[g, s, e, c] = probs[g, s, e]
    return {"dispatch": dispatch, "combine": combine, "probs": probs, "logits": logits}


def soft(x, phi, scale, num_experts, slots, normalize=True, eps=1e-6, token_mask=None):
    """Soft MoE: dispatch = softmax over tokens, combine = softmax over slots.

    With `token_mask` (G, S), slots mix real tokens only and masked tokens
    get nothing.
    """
    x = np.asarray(x, np.float64)
    phi = np.asarray(phi, np.float64)
    if normalize:
        x = x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)
        phi = scale * phi / np.sqrt(np.sum(phi * phi, axis=0, keepdims=True) + eps)
    logits = x @ phi  # (G, S, E*n)
    g_, s_, _ = logits.shape
    dispatch_logits = logits
    combine = softmax(logits, axis=2)
    if token_mask is not None:
        real = np.asarray(token_mask, bool)[..., None]
        dispatch_logits = np.where(real, logits, -np.inf)
        combine = combine * real
    dispatch = softmax(dispatch_logits, axis=1).reshape(g_, s_, num_experts, slots)
    combine = combine.reshape(g_, s_, num_experts, slots)
    return {"dispatch": dispatch, "combine": combine, "logits": logits}


# ------------------------------------------------------------------ experts
def experts(x, weights, activation="gelu", gated=False):
    """x (E, N, D) through E independent MLPs.

    `weights` maps kernel_in (E, D, H), kernel_out (E, H, D), optional
    kernel_gate (E, D, H), bias_in (E, H), bias_out (E, D).
    """
    act = ACTIVATIONS[activation]
    x = np.asarray(x, np.float64)
    out = []
    for e in range(x.shape[0]):
        h = x[e] @ weights["kernel_in"][e]
        if "bias_in" in weights:
            h = h + weights["bias_in"][e]
        if gated:
            h = act(x[e] @ weights["kernel_gate"][e]) * h
        else:
            h = act(h)
        y = h @ weights["kernel_out"][e]
        if "bias_out" in weights:
            y = y + weights["bias_out"][e]
        out.append(y)
    return np.stack(out)


def moe_forward(x, dispatch, combine, expert_weights, activation="gelu", gated=False):
    """Full MoE block from dense routing tensors.

    x: (G, S, D); dispatch/combine: (G, S, E, C). Expert e sees, for every
    group g and slot c, the token mix `sum_s dispatch[g, s, e, c] * x[g, s]`;
    token s gets `sum_{e, c} combine[g, s, e, c] * expert_out[e, g, c]`.
    """
    x = np.asarray(x, np.float64)
    g_, s_, e_, c_ = dispatch.shape
    d_ = x.shape[-1]
    slots_in = np.zeros((e_, g_, c_, d_))
    for g in range(g_):
        for e in range(e_):
            for c in range(c_):
                slots_in[e, g, c] = dispatch[g, :, e, c] @ x[g]
    slots_out = experts(slots_in.reshape(e_, g_ * c_, d_), expert_weights, activation, gated)
    slots_out = slots_out.reshape(e_, g_, c_, d_)
    y = np.zeros((g_, s_, d_))
    for g in range(g_):
        for s in range(s_):
            for e in range(e_):
                for c in range(c_):
                    if combine[g, s, e, c] != 0.0:
                        y[g, s] += combine[g, s, e, c] * slots_out[e, g, c]
    return y


# ------------------------------------------------------------------- losses
def cv_squared(v):
    """Squared coefficient of variation (population variance)."""
    v = np.asarray(v, np.float64)
    return np.var(v) / (np.mean(v) ** 2 + 1e-10)


def importance_loss(probs):
    return float(np.mean([cv_squared(p.sum(axis=0)) for p in probs]))


def load_balancing_loss(probs, expert_index, num_experts):
    values = []
    for p, idx in zip(probs, expert_index):
        counts = np.bincount(idx.reshape(-1), minlength=num_experts)
        fraction = counts / idx.size
        values.append(num_experts * np.sum(fraction * p.mean(axis=0)))
    return float(np.mean(values))


def router_z_loss(logits):
    return float(np.mean(logsumexp(logits) ** 2))


def load_loss(logits, noisy_logits, noise_std, top_k):
    """V-MoE load: P(expert e in the top-k under fresh noise), CV^2 per group."""
    logits = np.asarray(logits, np.float64)
    noisy = np.asarray(noisy_logits, np.float64)
    values = []
    for lg, nz in zip(logits, noisy):
        threshold = np.sort(nz, axis=-1)[:, ::-1][:, top_k - 1 : top_k]
        z = (threshold - lg) / noise_std
        p = 1.0 - 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
        values.append(cv_squared(p.sum(axis=0)))
    return float(np.mean(values))
