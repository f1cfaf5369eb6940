"""Chunked evaluation and in-place residuals: trade speed for peak memory without touching the math.

The O(L²) and O(L³) steps of the folding trunk are independent along some "batch-like" dimension (a row of the
pair representation, a query position). ``chunk_apply`` evaluates such a step a slice at a time and writes the
pieces into one output tensor, so only one slice's intermediates (logits, hidden activations) exist at once.
The modules state *which* dimension is independent; this file is the only place that knows *how* to chunk.

``residual_add_`` and ``product_`` are the other memory trick: ``x + update`` / ``x * y`` written into ``x`` when
autograd is off, so an inference pass keeps one pair representation instead of one per residual step, and a chunk's
gating allocates no further temporaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def chunk_apply(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    dims: Sequence[int],
    chunk_size: int | None,
    out_dim: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluate ``fn(*inputs)`` in slices of ``chunk_size`` along independent dimensions.

    Args:
        fn: maps slices of ``inputs`` to one tensor; slice ``t`` of the inputs must give slice ``t`` of the output
            along ``out_dim``. Tensors that every slice needs whole are closed over by ``fn``.
        inputs: tensors to slice; ``inputs[n]`` is cut along ``dims[n]``, and all have the same size there.
        dims: the dimension to slice in each input (negative values count from the end).
        chunk_size: slice length; ``None`` (or a length covering everything) calls ``fn`` once on the whole inputs.
        out_dim: the output dimension along which the slices' results are placed.
        out: a tensor to write the result into instead of a new one. It may share memory with an input when slice
            ``t`` of the output depends only on slice ``t`` of that input: each slice is computed before it is
            written. Must not be given while autograd records (the writes are in place).

    Returns:
        The same tensor as ``fn(*inputs)`` (up to floating-point summation order inside ``fn``); ``out`` if given.
    """
    if len(inputs) != len(dims) or not inputs:
        raise ValueError(f"chunk_apply needs one dim per input, got {len(inputs)} inputs and {len(dims)} dims")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    size = inputs[0].shape[dims[0]]
    sizes = [x.shape[d] for x, d in zip(inputs, dims, strict=True)]
    if any(s != size for s in sizes):
        raise ValueError(f"chunk_apply inputs disagree on the sliced length: {sizes}")
    if chunk_size is None or chunk_size >= size:
        whole = fn(*inputs)
        return whole if out is None else out.copy_(whole)

    for start in range(0, size, chunk_size):
        length = min(chunk_size, size - start)
        piece = fn(*(x.narrow(d, start, length) for x, d in zip(inputs, dims, strict=True)))
        if out is None:
            shape = list(piece.shape)
            shape[out_dim] = size
            out = piece.new_empty(shape)
        out.narrow(out_dim, start, length).copy_(piece)
    return out


def residual_add_(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x + update``; written into ``x`` when autograd is off (``torch.no_grad`` or inference mode).

    The caller must own ``x`` (no one else may need its old value). With autograd on, a new tensor is returned,
    so gradients are exactly those of ``x + update``. Addition is commutative in floating point, so
    ``residual_add_(update, x)`` gives the same numbers with ``update``'s memory reused instead.
    """
    if torch.is_grad_enabled():
        return x + update
    return x.add_(update)


def product_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x * y``; written into ``x`` when autograd is off. The caller must own ``x`` (e.g. a fresh gate)."""
    if torch.is_grad_enabled():
        return x * y
    return x.mul_(y)
