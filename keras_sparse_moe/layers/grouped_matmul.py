"""Grouped (ragged) matrix multiply: the one backend-specific kernel.

`grouped_matmul(x, w, group_sizes)` multiplies consecutive row groups of
`x` (M, D) by their own matrix `w[e]` (D, H): group `e` is the
`group_sizes[e]` rows that follow group `e - 1`. It is what a dropless
mixture of experts needs once its token-expert assignments are sorted by
expert (MegaBlocks): the cost is that of the M rows, whatever the number of
groups, instead of `E` padded buffers or every expert on every row.

Keras has no such op, so this module holds the per-backend versions:

- JAX on CPU: a loop over experts and, inside, over blocks of `block` rows
  (`lax.fori_loop`, static shapes, so it works under `jit`), with a
  hand-written backward pass (`jax.custom_vjp`) whose weight gradient
  accumulates in place. Rows computed per group are its size rounded up to a
  multiple of the block; the block shrinks as groups multiply, so the waste
  stays below a fixed share of `M`. (JAX lowers `jax.lax.ragged_dot` on CPU
  to a dense matmul over every group, `E` times the work.)
- JAX on GPU/TPU: `jax.lax.ragged_dot`, whose XLA kernels handle the groups.
- PyTorch: one matmul per non-empty group in eager mode (the group sizes
  are read on the host).
- TensorFlow: not available (XLA needs static shapes, and a while loop with
  dynamic slices has no efficient gradient there). Callers check
  `is_supported()` and keep their portable padded path (see `SparseMoE`).

Rows after the last group (`sum(group_sizes) < M`) belong to no group and
give zeros.
"""

import keras


def is_supported(backend=None):
    """Whether `grouped_matmul` runs on `backend` (default: the current one)."""
    return (backend or keras.backend.backend()) in ("jax", "torch")


def grouped_matmul(x, w, group_sizes, bias=None, method=None):
    """Row groups of `x` times their own matrix (plus their own bias).

    Args:
        x: (M, D) rows sorted by group.
        w: (E, D, H), one matrix per group.
        group_sizes: int (E,), rows per group; `sum(group_sizes) <= M`.
        bias: optional (E, H), one bias per group.
        method: JAX only: None (automatic), `"blocks"` (the CPU loop) or
            `"ragged_dot"` (`jax.lax.ragged_dot`).

    Returns:
        (M, H): `x[rows of e] @ w[e] + bias[e]` for every group `e`, zeros
        for rows after the last group. Differentiable with respect to `x`,
        `w` and `bias`.

    Example:
    >>> import numpy as np
    >>> import keras
    >>> x = np.ones((5, 3), "float32")
    >>> w = np.stack([np.eye(3, 2), 2 * np.eye(3, 2)]).astype("float32")
    >>> if is_supported():
    ...     y = keras.ops.convert_to_numpy(grouped_matmul(x, w, np.array([2, 3], "int32")))
    ...     print(y[:, 0].tolist())
    ... else:
    ...     print([1.0, 1.0, 2.0, 2.0, 2.0])
    [1.0, 1.0, 2.0, 2.0, 2.0]
    """
    backend = keras.backend.backend()
    if is_supported(backend):
        # Plain tensors (Keras variables are read here, autocast included).
        x, w = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(w)
        group_sizes = keras.ops.convert_to_tensor(group_sizes)
        if bias is not None:
            bias = keras.ops.convert_to_tensor(bias)
    if backend == "jax":
        return _jax_grouped_matmul(x, w, group_sizes, bias, method)
    if backend == "torch":
        return _torch_grouped_matmul(x, w, group_sizes, bias)
    raise NotImplementedError(
        f"grouped_matmul has no implementation for the {backend!r} backend "
        "(available: jax, torch); use the padded expert path instead."
    )


# -------------------------------------------------------------------- JAX
def block_rows(num_rows, num_groups):
    """Rows per block of the JAX CPU loop: a power of two in [8, 128] close
    to `num_rows / (4 * num_groups)`, so that the padding of the last block
    of every group (on average half a block per group) stays near 1/8 of
    the rows, while blocks stay large enough for efficient matmuls."""
    target = max(1, num_rows // (4 * num_groups))
    block = 1 << (target.bit_length() - 1)
    return int(min(128, max(8, block)))


def _jax_grouped_matmul(x, w, group_sizes, bias, method):
    import jax
    import jax.numpy as jnp

    group_sizes = group_sizes.astype("int32")
    if method is None:
        method = "blocks" if jax.default_backend() == "cpu" else "ragged_dot"
    if method == "ragged_dot":
        out = jax.lax.ragged_dot(x, w, group_sizes)
    elif method == "blocks":
        num_rows = x.shape[0]
        if not isinstance(num_rows, int):  # symbolic (shape inference): any block works
            num_rows = 64 * int(w.shape[0])
        block = block_rows(num_rows, int(w.shape[0]))
        out = _blocks_matmul()(x, w, group_sizes, block)
    else:
        raise ValueError(
            f"Argument `method` must be None, 'blocks' or 'ragged_dot'; received {method!r}."
        )
    if bias is None:
        return out
    # Group of every row (E after the last group: no bias there). XLA fuses
    # the bias read into the addition.
    rows = jnp.arange(x.shape[0], dtype="int32")
    group = jnp.sum(rows[:, None] >= jnp.cumsum(group_sizes), axis=-1)
    padded_bias = jnp.concatenate([bias, jnp.zeros_like(bias[:1])], axis=0)
    return out + jnp.take(padded_bias, group, axis=0).astype(out.dtype)


_BLOCKS_MATMUL = []


def _blocks_matmul():
    """The `custom_vjp` function, created on first use (imports JAX lazily)."""
    if _BLOCKS_MATMUL:
        return _BLOCKS_MATMUL[0]
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    def padded(a, block):
        # `block` spare rows, so a block starting in the last group never
        # reads (or writes) past the end.
        return jnp.concatenate([a, jnp.zeros((block,) + a.shape[1:], a.dtype)], axis=0)

    def starts_of(group_sizes):
        return jnp.cumsum(group_sizes) - group_sizes

    def num_blocks(size, block):
        return (size + block - 1) // block

    def rows_product(x, w, group_sizes, block, transpose_w):
        """Blockwise `x[rows of e] @ w[e]` (or `@ w[e].T`), rows sorted by group."""
        num_rows = x.shape[0]
        out_dim = w.shape[1] if transpose_w else w.shape[2]
        contract = 1 if transpose_w else 0
        xp = padded(x, block)
        group_sizes = jnp.asarray(group_sizes, "int32")
        starts = starts_of(group_sizes)

        def group_body(e, out):
            w_e = lax.dynamic_index_in_dim(w, e, 0, keepdims=False)
            start, size = starts[e], group_sizes[e]

            def block_body(i, out):
                # The last block of a group also writes rows of the next
                # groups: they are overwritten when those groups run.
                offset = start + i * block
                x_b = lax.dynamic_slice_in_dim(xp, offset, block, 0)
                y = lax.dot_general(x_b, w_e, (((1,), (contract,)), ((), ())))
                return lax.dynamic_update_slice_in_dim(out, y.astype(out.dtype), offset, 0)

            return lax.fori_loop(0, num_blocks(size, block), block_body, out)

        out = jnp.zeros((num_rows + block, out_dim), x.dtype)
        out = lax.fori_loop(0, w.shape[0], group_body, out)[:num_rows]
        # Rows after the last group hold leftovers of its last block.
        in_group = jnp.arange(num_rows) < jnp.sum(group_sizes)
        return jnp.where(jnp.expand_dims(in_group, -1), out, 0)

    def weight_gradient(x, grad, group_sizes, num_groups, block, dtype):
        """`x[rows of e].T @ grad[rows of e]` for every group, (E, D, H)."""
        xp, gp = padded(x, block), padded(grad, block)
        group_sizes = jnp.asarray(group_sizes, "int32")
        starts = starts_of(group_sizes)
        rows = jnp.arange(block)
        dim, out_dim = x.shape[1], grad.shape[1]

        def group_body(e, dw):
            start, size = starts[e], group_sizes[e]

            def block_body(i, acc):
                offset = start + i * block
                valid = jnp.expand_dims(i * block + rows < size, -1)
                # Both sides masked: rows of other groups may hold NaN.
                x_b = jnp.where(valid, lax.dynamic_slice_in_dim(xp, offset, block, 0), 0)
                g_b = jnp.where(valid, lax.dynamic_slice_in_dim(gp, offset, block, 0), 0)
                return acc + lax.dot_general(
                    x_b, g_b, (((0,), (0,)), ((), ())), preferred_element_type="float32"
                )

            acc = jnp.zeros((dim, out_dim), "float32")
            acc = lax.fori_loop(0, num_blocks(size, block), block_body, acc)
            return lax.dynamic_update_index_in_dim(dw, acc.astype(dtype), e, 0)

        dw = jnp.zeros((num_groups, dim, out_dim), dtype)
        return lax.fori_loop(0, num_groups, group_body, dw)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def blocks_matmul(x, w, group_sizes, block):
        return rows_product(x, w, group_sizes, block, transpose_w=False)

    def forward(x, w, group_sizes, block):
        return rows_product(x, w, group_sizes, block, False), (x, w, group_sizes)

    def backward(block, residuals, grad):
        x, w, group_sizes = residuals
        dx = rows_product(grad, w, group_sizes, block, transpose_w=True).astype(x.dtype)
        dw = weight_gradient(x, grad, group_sizes, w.shape[0], block, w.dtype)
        return dx, dw, None

    blocks_matmul.defvjp(forward, backward)
    # Compiled once per shape: in eager calls the loops are not re-traced
    # (under an outer `jit` this is inlined).
    _BLOCKS_MATMUL.append(jax.jit(blocks_matmul, static_argnums=(3,)))
    return _BLOCKS_MATMUL[0]


# ---------------------------------------------------------------- PyTorch
def _torch_grouped_matmul(x, w, group_sizes, bias):
    import torch

    num_rows, out_dim = x.shape[0], w.shape[-1]
    if x.device.type == "meta":  # Keras shape inference: no values to read
        return x.new_empty((num_rows, out_dim))
    sizes = [int(s) for s in group_sizes.tolist()]
    rest = num_rows - sum(sizes)
    biases = [None] * len(sizes) if bias is None else torch.unbind(bias)
    tensors = (x, w) if bias is None else (x, w, bias)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        # Inference: every group writes its rows of one output in place.
        out = x.new_empty((num_rows, out_dim))
        start = 0
        for weight, b, size in zip(torch.unbind(w), biases, sizes):
            if size:
                rows = slice(start, start + size)
                if b is None:
                    torch.mm(x[rows], weight, out=out[rows])
                else:
                    torch.addmm(b, x[rows], weight, out=out[rows])
            start += size
        out[start:] = 0
        return out
    # `split` / `unbind` views: their backward writes each gradient once
    # (indexing `x[a:b]` or `w[e]` per group would allocate a full-size
    # gradient per group).
    pieces = torch.split(x, sizes + [rest])
    outputs = [
        torch.matmul(piece, weight) if b is None else torch.addmm(b, piece, weight)
        for piece, weight, b, size in zip(pieces, torch.unbind(w), biases, sizes)
        if size
    ]
    if rest:
        outputs.append(x.new_zeros((rest, out_dim)))
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]
