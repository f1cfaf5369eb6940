"""``chunk_size="auto"``: the fastest ``ChunkPlan`` whose estimated peak memory fits in the memory that is free now.

Memory of one trunk pass over B sequences of L residues, in elements of the trunk's dtype (c_z pair channels,
H pair heads; ``chunking.ChunkPlan`` explains the plans):

* whole tensors: the pair state (L²·c_z), plus with ``pair_blocks == 1`` one more full-size pair tensor (the
  triangle multiplication's operand; the structure module's normalized pair input; the heads' logits), or with
  ``pair_blocks == n`` the lean schedule's pending tiles and one row block's features, at most
  ((n + 1)²/(4n²) + 1/n)·L²·c_z (0.44 for n = 8); the triangle attention's shared bias (H·L², twice in a padded
  batch) and the pair mask and distance bins (2·L²).
* per row of a chunk (r rows), the largest step's temporaries: about ten c_z-wide rows of L positions (the
  triangle multiplication's projections, product tile and gate; the triangle attention's q, k, v, gate and output;
  the pair transition's hidden rows). ``None`` (unchunked) is r = L.
* with ``pair_blocks == 1`` and chunking on, the triangle multiplication's left operand for the rows of one square
  product tile (``chunking.product_tile``: about sqrt(r·L) rows of L positions, c_z wide).

The estimate may use ``SAFETY`` of the free memory. Plans are tried from the fastest (one pair block) to the
leanest (``LEAN_BLOCKS``), each with the largest power-of-two row count that fits; the first one that fits with a
reasonable row count is used, and when none fits the leanest plan with one row is returned anyway: a length is
never refused because of an estimate.

On the CPU, slices of about ``CPU_CHUNK_ELEMENTS`` positions (rows × L) are also the fastest: every temporary then
stays within the allocator's reuse range (freshly mapped pages cost more than the arithmetic) and in cache. So on
the CPU rows are capped there even with memory to spare; short sequences stay unchunked.
"""

from __future__ import annotations

import os

import torch

from esmfold_lite.fold.chunking import LEAN_BLOCKS, ChunkPlan, product_tile
from esmfold_lite.fold.config import TrunkConfig

SAFETY = 0.75
"""Fraction of the free memory the estimate may use."""

CPU_CHUNK_ELEMENTS = 16384
"""On the CPU, chunks of at most this many rows × L positions (L=256 → 64 rows, L=1024 → 16 rows)."""

PLAN_BLOCKS = (1, 4, LEAN_BLOCKS)
"""Pair blocks tried by ``choose_chunk_plan``, fastest first (2 blocks would need more memory than 1)."""

MIN_ROWS = 4
"""A plan is taken only with at least this many rows per chunk (or all rows, when fewer); below that the next,
leaner plan is faster."""


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes that can be allocated now: free CUDA memory plus PyTorch's cached blocks, or the host's available RAM."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def trunk_peak_bytes(length: int, cfg: TrunkConfig, plan: ChunkPlan, batch: int = 1, itemsize: int = 4) -> int:
    """Estimated peak bytes of one trunk pass with ``plan`` (see the module docstring)."""
    L, c_z = length, cfg.pairwise_state_dim
    pair_heads = c_z // cfg.pairwise_head_width
    rows = L if plan.rows is None else min(plan.rows, L)
    n = plan.pair_blocks
    extra_pairs = 1.0 if n == 1 else (n + 1) ** 2 / (4 * n * n) + 1 / n  # pending tiles + one block's features
    biases = 1 if batch == 1 else 2  # the triangle bias, and a padded batch's per-run copy
    whole = (1 + extra_pairs) * L * L * c_z + biases * pair_heads * L * L + 2 * L * L
    per_row = 10 * c_z * L
    tile_rows = product_tile(L, rows) if n == 1 and rows < L else 0
    return int(batch * itemsize * (whole + rows * per_row + tile_rows * c_z * L))


def _power_of_two_below(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)


def choose_chunk_plan(
    length: int,
    cfg: TrunkConfig,
    batch: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    available: int | None = None,
) -> ChunkPlan:
    """The plan for ``chunk_size="auto"``.

    Args:
        length: L, residues per sequence (padded length of the batch).
        cfg: the trunk's sizes.
        batch: B, sequences folded together.
        device: where the trunk runs (default CPU); its free memory is probed with ``available_memory``.
        dtype: the trunk's dtype.
        available: bytes to plan for instead of probing the device.

    Returns:
        The fastest plan that fits (see the module docstring).
    """
    device = torch.device(device or "cpu")
    itemsize = torch.empty((), dtype=dtype).element_size()
    budget = SAFETY * (available_memory(device) if available is None else available)
    top = length  # rows per chunk when nothing else limits them
    if device.type == "cpu":
        top = min(length, _power_of_two_below(max(1, CPU_CHUNK_ELEMENTS // length)))
    candidates = [top] + [1 << k for k in range(top.bit_length() - 1, -1, -1) if 1 << k < top]
    for blocks in PLAN_BLOCKS:
        for rows in candidates:
            plan = ChunkPlan(None if rows >= length else rows, blocks)
            if rows >= min(MIN_ROWS, top) and trunk_peak_bytes(length, cfg, plan, batch, itemsize) <= budget:
                return plan
    for rows in candidates:  # below MIN_ROWS: the leanest plan, as many rows as fit
        plan = ChunkPlan(None if rows >= length else rows, LEAN_BLOCKS)
        if trunk_peak_bytes(length, cfg, plan, batch, itemsize) <= budget:
            return plan
    return ChunkPlan(1, LEAN_BLOCKS)  # nothing fits by the estimate: the smallest footprint there is
