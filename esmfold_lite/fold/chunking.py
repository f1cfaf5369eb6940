"""Chunked evaluation and in-place updates: trade speed for peak memory without touching the math.

The O(L²) and O(L³) steps of the folding trunk are independent along some "batch-like" dimension (a row of the
pair representation, a query position). The modules state *which* dimension is independent and *what* the update
is; this file is the only place that knows *how* to slice, accumulate in place and reuse memory:

* ``chunk_apply``: evaluate a step a slice at a time into one output, so only one slice's intermediates exist.
* ``add_update_``: ``x + update(x)`` for a row-local update, added into ``x`` slice by slice (autograd off).
* ``pairwise_update_``: the triangle multiplication's schedule, an update of every tile (P, Q) of a square pair
  tensor from rows P and Q, in place and without a second full-size pair buffer.
* ``RowMap``: a tensor ``fn(x)`` whose slices are computed when ``chunk_apply`` asks for them (never whole).
* ``ChunkPlan``: how much of this a forward pass uses (``fold.auto_chunk`` picks one from free memory).
* ``reuse_buffers`` / ``scratch``: large scratch buffers kept for the length of a forward pass instead of being
  allocated (and page-faulted in) again by every call.

In-place writes happen only while autograd is off (``torch.no_grad`` / inference mode); with autograd on every
function here returns new tensors with the same values, so gradients are those of the plain formula.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch

# ---- plans ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkPlan:
    """How a forward pass slices its O(L²)/O(L³) steps. Results never depend on it.

    Attributes:
        rows: slice length (rows of the pair representation, or queries) of every step that is independent along
            one dimension; ``None`` evaluates whole tensors.
        pair_blocks: ``1``: full-size pair buffers are allowed where they are fastest (the triangle
            multiplication's operand, the structure module's pair input, the heads' logits); peak about 2× the
            pair representation. ``n > 1``: lean memory, no second full-size pair tensor is ever alive: the
            triangle multiplication runs ``pairwise_update_`` with ``n`` row blocks (≈ 1.44× the pair for n = 8,
            some projections recomputed about n/2 times), the structure module computes its pair input slice by
            slice, and the heads never hold an L×L×bins tensor (their logits are not returned).
    """

    rows: int | None = None
    pair_blocks: int = 1

    def __post_init__(self):
        if self.rows is not None and (isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1):
            raise ValueError(f"chunk rows must be a positive integer or None, got {self.rows!r}")
        if not isinstance(self.pair_blocks, int) or self.pair_blocks < 1:
            raise ValueError(f"pair_blocks must be a positive integer, got {self.pair_blocks!r}")

    @property
    def lean(self) -> bool:
        return self.pair_blocks > 1

    @staticmethod
    def of(chunk_size: int | ChunkPlan | None, length: int) -> ChunkPlan:
        """The plan for an explicit ``chunk_size``: ``None`` = whole tensors; an integer N ≥ L = whole rows with one
        pair block; N < L = N rows per slice and the leanest plan (``LEAN_BLOCKS`` pair blocks, ≤ 1.5× the pair).
        """
        if isinstance(chunk_size, ChunkPlan):
            return chunk_size
        if chunk_size is None:
            return ChunkPlan()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f'chunk_size must be a positive integer, None or "auto", got {chunk_size!r}')
        return ChunkPlan(chunk_size, 1 if chunk_size >= length else LEAN_BLOCKS)


LEAN_BLOCKS = 8
"""Row blocks of ``pairwise_update_`` in the leanest plan: its extra memory is at most ((n + 1)²/(4n²) + 1/n) ≈ 0.44
of the pair representation."""


# ---- slicing ----------------------------------------------------------------------------------------------------


class RowMap:
    """``fn(source)`` for an ``fn`` that treats every slice of ``source`` along ``dim`` independently, computed a
    slice at a time when ``chunk_apply`` (or ``narrow``) asks for one, so the whole result never exists.

    ``shape`` is the source's (only the size along ``dim`` is meaningful).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, dim: int):
        self.fn, self.source, self.dim = fn, source, dim

    @property
    def shape(self) -> torch.Size:
        return self.source.shape

    def then(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RowMap:
        """``fn`` applied after this map (fn must also treat slices independently)."""
        first = self.fn
        return RowMap(lambda x: fn(first(x)), self.source, self.dim)

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        if dim % self.source.dim() != self.dim % self.source.dim():
            raise ValueError(f"a RowMap over dimension {self.dim} cannot be sliced along {dim}")
        return self.fn(self.source.narrow(dim, start, length))

    def materialize(self, chunk_size: int | None = None) -> torch.Tensor:
        """The whole ``fn(source)``, computed ``chunk_size`` slices at a time (one output tensor)."""
        return chunk_apply(self.fn, (self.source,), (self.dim,), chunk_size, out_dim=self.dim)


def slices(size: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    """(start, length) of consecutive slices of ``chunk_size`` covering ``range(size)`` (one slice for None)."""
    step = size if chunk_size is None else max(1, chunk_size)
    for start in range(0, size, max(step, 1)):
        yield start, min(step, size - start)


def _whole(x: torch.Tensor | RowMap) -> torch.Tensor:
    return x.fn(x.source) if isinstance(x, RowMap) else x


def chunk_apply(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    inputs: Sequence[torch.Tensor | RowMap],
    dims: Sequence[int],
    chunk_size: int | None,
    out_dim: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Evaluate ``fn(*inputs)`` in slices of ``chunk_size`` along independent dimensions.

    Args:
        fn: maps slices of ``inputs`` to one tensor (or a tuple of tensors); slice ``t`` of the inputs must give
            slice ``t`` of the output(s) along ``out_dim``. Tensors that every slice needs whole are closed over.
        inputs: tensors (or ``RowMap``s) to slice; ``inputs[n]`` is cut along ``dims[n]``, all of the same size there.
        dims: the dimension to slice in each input (negative values count from the end).
        chunk_size: slice length; ``None`` (or a length covering everything) calls ``fn`` once on the whole inputs.
        out_dim: the output dimension along which the slices' results are placed.
        out: a tensor to write the (single) result into instead of a new one. It may share memory with an input
            when slice ``t`` of the output depends only on slice ``t`` of that input: each slice is computed before
            it is written. Must not be given while autograd records (the writes are in place).

    Returns:
        The same as ``fn(*inputs)`` (up to floating-point summation order inside ``fn``); ``out`` if given.
    """
    if len(inputs) != len(dims) or not inputs:
        raise ValueError(f"chunk_apply needs one dim per input, got {len(inputs)} inputs and {len(dims)} dims")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    sizes = [x.shape[d] for x, d in zip(inputs, dims, strict=True)]
    size = sizes[0]
    if any(s != size for s in sizes):
        raise ValueError(f"chunk_apply inputs disagree on the sliced length: {sizes}")
    if chunk_size is None or chunk_size >= size:
        whole = fn(*(_whole(x) for x in inputs))
        return whole if out is None else out.copy_(whole)

    outs: list[torch.Tensor] | None = None if out is None else [out]
    single = True
    for start, length in slices(size, chunk_size):
        pieces = fn(*(x.narrow(d, start, length) for x, d in zip(inputs, dims, strict=True)))
        single = isinstance(pieces, torch.Tensor)
        pieces = (pieces,) if single else pieces
        if outs is None:
            outs = []
            for piece in pieces:
                shape = list(piece.shape)
                shape[out_dim] = size
                outs.append(piece.new_empty(shape))
        for target, piece in zip(outs, pieces, strict=True):
            target.narrow(out_dim, start, length).copy_(piece)
    return outs[0] if single else tuple(outs)


# ---- in-place updates -------------------------------------------------------------------------------------------


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


def add_update_(
    x: torch.Tensor,
    update: Callable[..., torch.Tensor],
    chunk_size: int | None,
    dim: int = 1,
    extra: Sequence[torch.Tensor] = (),
    extra_dims: Sequence[int] = (),
) -> torch.Tensor:
    """``x + update(x, *extra)`` for an update whose slice ``t`` along ``dim`` depends only on slice ``t`` of ``x``
    (and of ``extra``, cut along ``extra_dims``).

    With autograd off the update is evaluated ``chunk_size`` slices at a time and each slice is added into ``x``
    (which may be a strided view, e.g. a transposed pair representation) as soon as it is computed: ``x`` must be
    owned by the caller, and no full-size update ever exists. With autograd on, a new tensor is returned.
    """
    inputs, dims = (x, *extra), (dim, *extra_dims)
    if torch.is_grad_enabled():
        return x + chunk_apply(update, inputs, dims, chunk_size, out_dim=dim)
    for start, length in slices(x.shape[dim], chunk_size):
        x.narrow(dim, start, length).add_(
            update(*(t.narrow(d, start, length) for t, d in zip(inputs, dims, strict=True)))
        )
    return x


def _bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive (start, stop) ranges of near-equal length covering ``range(size)``."""
    parts = max(1, min(parts, size))
    edges = [round(i * size / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _rows_of(
    fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    v: torch.Tensor,
    extra: torch.Tensor | None,
    start: int,
    stop: int,
    chunk_size: int | None,
    dim: int,
    key: str = "pairwise_features",
) -> torch.Tensor:
    """``fn(v[:, start:stop], extra[:, start:stop])``, a row feature with the rows along ``dim``, computed
    ``chunk_size`` rows at a time into the reused scratch buffer ``key``."""
    out = None
    for begin, length in slices(stop - start, chunk_size):
        rows = slice(start + begin, start + begin + length)
        piece = fn(v[:, rows], None if extra is None else extra[:, rows])
        if out is None:
            if length == stop - start:
                return piece
            shape = list(piece.shape)
            shape[dim] = stop - start
            out = scratch(key, shape, piece)
        out.narrow(dim, begin, length).copy_(piece)
    return out


def product_tile(length: int, chunk_size: int | None) -> int:
    """Side of the square tiles in which ``pairwise_update_`` with one block evaluates its update: as many
    positions as ``chunk_size`` rows of ``length`` (so the same temporaries), but at least ``chunk_size`` rows.

    A product with few rows is a matrix product with few rows, which no GEMM runs at speed (on the CPU, 16-32 rows
    reach a third to two thirds of ``torch.mm``'s rate, 128 rows 90%); a square tile has many rows and columns.
    """
    if chunk_size is None or chunk_size >= length:
        return length
    return min(length, max(chunk_size, math.isqrt(chunk_size * length)))


def pairwise_update_(
    v: torch.Tensor,
    extra: torch.Tensor | None,
    first: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    second: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    update: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    chunk_size: int | None,
    blocks: int = 1,
    whole_rows: bool = False,
) -> torch.Tensor:
    """``v[:, P, Q] + update(first(v[:, P]), second(v[:, Q]), v[:, P, Q])`` for every tile (P, Q) of rows × columns.

    ``first`` and ``second`` map rows of ``v`` (B, r, L, C) with the same rows of ``extra`` (B, r, L, ...; or None)
    to row features (B, c, r, L); ``update(F, S, v_tile)`` maps the features F of r rows, those of q rows
    transposed, S (B, c, L, q) (so F·S is a plain batched matmul), and the tile (B, r, q, C) to the tile's update.
    Both features must see the *original* rows, so an in-place update needs a schedule: ``v`` is cut into ``blocks``
    row blocks G, and step G computes the tiles of column block G (from ``second`` of G and ``first`` of every later
    row, streamed ``chunk_size`` rows at a time) and of row block G (from ``first`` of G and ``second`` of the later
    rows). After step G no original value of rows G is needed, so row block G is written; tiles of later rows wait
    as pending updates.

    Memory besides ``v`` (autograd off): one block's features (1/blocks of a full row feature, which is the size of
    the pair for c = C) plus pending tiles (at most (blocks + 1)²/(4·blocks²) of the pair) plus one chunk's
    temporaries. ``blocks=1``: ``second`` of all rows is one full buffer, nothing is pending and nothing is
    recomputed (fastest), and the update runs in square tiles of ``product_tile`` rows × columns (plus the
    ``first`` features of one tile's rows), or ``chunk_size`` whole rows at a time with ``whole_rows`` (an update
    that must see whole rows, e.g. a dropout mask shared along them). ``blocks=n``: ``first``/``second`` of later
    rows are recomputed, about n/2 extra times. With autograd on, ``v`` is left alone and a new tensor is returned.
    """
    length = v.shape[1]

    def rows_of(v_rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        return v[:, v_rows], None if extra is None else extra[:, v_rows]

    if torch.is_grad_enabled():
        features = _rows_of(second, v, extra, 0, length, chunk_size, dim=-2).mT
        deltas = [
            update(first(*rows_of(slice(start, start + n))), features, v[:, start : start + n])
            for start, n in slices(length, chunk_size)
        ]
        return v + torch.cat(deltas, dim=1)

    bounds = _bounds(length, blocks)
    # One block: square tiles (a GEMM with many rows); several blocks, or whole rows on request: chunk_size rows
    # by the whole column block, so no step holds more than one chunk's features besides its block's.
    tiled = len(bounds) == 1 and not whole_rows
    row_step = product_tile(length, chunk_size) if tiled else chunk_size
    col_step = row_step if tiled else None
    pending: dict[tuple[int, int], torch.Tensor] = {}
    for g, (g0, g1) in enumerate(bounds):
        last = g == len(bounds) - 1
        # Column block G: tiles (rows >= g0, G). Rows of G and later are still original; only in the last step
        # may they be written now (nothing reads them afterwards).
        second_g = _rows_of(second, v, extra, g0, g1, chunk_size, dim=-2).mT
        for k, (k0, k1) in enumerate(bounds[g:], start=g):
            for start, n in slices(k1 - k0, row_step):
                rows = slice(k0 + start, k0 + start + n)
                first_rows = _rows_of(first, v, extra, rows.start, rows.stop, chunk_size, -2, "pairwise_rows")
                for q0, q in slices(g1 - g0, col_step):
                    cols = slice(g0 + q0, g0 + q0 + q)
                    delta = update(first_rows, second_g[..., q0 : q0 + q], v[:, rows, cols])
                    if last:
                        v[:, rows, cols].add_(delta)
                        continue
                    tile = pending.get((k, g))
                    if tile is None:
                        tile = pending[k, g] = delta.new_empty((delta.shape[0], k1 - k0, *delta.shape[2:]))
                    tile[:, start : start + n] = delta
        del second_g
        if last:
            break
        # Row block G: tiles (G, columns >= g1), from first(G) and the later rows' second features.
        first_g = _rows_of(first, v, extra, g0, g1, chunk_size, dim=-2)
        for start, n in slices(length - g1, chunk_size):
            cols = slice(g1 + start, g1 + start + n)
            v[:, g0:g1, cols].add_(update(first_g, second(*rows_of(cols)).mT, v[:, g0:g1, cols]))
        del first_g
        for j, (j0, j1) in enumerate(bounds[: g + 1]):
            v[:, g0:g1, j0:j1].add_(pending.pop((g, j)))
    for j, (j0, j1) in enumerate(bounds[:-1]):
        v[:, bounds[-1][0] :, j0:j1].add_(pending.pop((len(bounds) - 1, j)))
    return v


# ---- reused scratch memory --------------------------------------------------------------------------------------

_BUFFERS: ContextVar[dict | None] = ContextVar("esmfold_lite_buffers", default=None)


@contextlib.contextmanager
def reuse_buffers() -> Iterator[None]:
    """Within this context ``scratch`` keeps its buffers (one per key, grown as needed) and hands them out again;
    they are freed when the outermost context exits."""
    if _BUFFERS.get() is not None:
        yield
        return
    token = _BUFFERS.set({})
    try:
        yield
    finally:
        _BUFFERS.reset(token)


def scratch(key: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: inside ``reuse_buffers`` the same
    memory for every call with this ``key`` (the caller must be done with the previous one), else a new tensor.
    Never reused while autograd records."""
    buffers = _BUFFERS.get()
    if buffers is None or torch.is_grad_enabled():
        return like.new_empty(shape)
    numel = math.prod(shape)
    held = buffers.get(key)
    if held is None or held.numel() < numel or held.dtype != like.dtype or held.device != like.device:
        buffers[key] = None  # free the old one before allocating its successor
        held = buffers[key] = like.new_empty(numel)
    return held[:numel].view(shape)
