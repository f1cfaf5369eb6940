"""``chunk_size="auto"``: the largest chunk whose estimated peak memory fits in the memory that is free now.

Memory of one trunk pass over B sequences of L residues (elements of the trunk's dtype):

* whole tensors: about ``3 · B·L²·c_z`` — a block's input pair state, its output and one update (the triangle
  multiplication's product buffer); after the trunk, the structure module's pair input and the heads' logits take
  about as much. The sequence attention's pair bias adds ``B·L²·H_seq``.
* per chunk of r rows, the largest step's temporaries: the triangle attention's (r, H_pair, L, L) bias/logits plus
  its row activations, the triangle multiplication's channel block of a and b (2·r·L·c_z) and the pair transition's
  hidden rows (r·L·4·c_z, twice). ``None`` (unchunked) is r = L.

The estimate is deliberately generous (a 25 % margin on top); the unit of choice is a power of two.

On the CPU, chunking is also faster: slices of about ``CPU_CHUNK_ELEMENTS`` rows × L positions keep every step's
temporaries near 8 MB (cache- and allocator-friendly; measured 1.5× faster than unchunked at L=256). So on the
CPU the pick is at most that many rows, even with memory to spare; short sequences stay unchunked.
"""

from __future__ import annotations

import os

import torch

from esmfold_lite.fold.config import TrunkConfig

SAFETY = 0.75
"""Fraction of the free memory the estimate may use."""

CPU_CHUNK_ELEMENTS = 16384
"""On the CPU, chunks of at most this many rows × L positions (L=256 → 64 rows, L=1024 → 16 rows)."""


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


def trunk_peak_bytes(length: int, cfg: TrunkConfig, chunk_size: int | None, batch: int = 1, itemsize: int = 4) -> int:
    """Estimated peak bytes of one trunk pass (see the module docstring) with ``chunk_size`` rows per chunk."""
    L, c_z = length, cfg.pairwise_state_dim
    pair_heads = c_z // cfg.pairwise_head_width
    seq_heads = cfg.sequence_state_dim // cfg.sequence_head_width
    rows = L if chunk_size is None else min(chunk_size, L)
    whole = 3 * L * L * c_z + L * L * seq_heads
    per_row = max(
        pair_heads * L * L + 8 * L * c_z,  # triangle attention: bias/logits + LN, q, k, v, gate, output rows
        6 * L * c_z,  # triangle multiplication: a and b channel block, projections, output rows
        10 * L * c_z,  # pair transition: LN, 4·c_z hidden (twice), output rows
    )
    return batch * itemsize * (whole + rows * per_row)


def _power_of_two_below(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)


def memory_chunk_size(length: int, cfg: TrunkConfig, available: int, batch: int = 1, itemsize: int = 4) -> int | None:
    """``None`` when the unchunked pass fits in ``SAFETY * available`` bytes, else the largest power of two that
    fits (1 if none does: the smallest footprint there is)."""
    budget = SAFETY * available
    if trunk_peak_bytes(length, cfg, None, batch, itemsize) <= budget:
        return None
    chunk = _power_of_two_below(length - 1)
    while chunk > 1 and trunk_peak_bytes(length, cfg, chunk, batch, itemsize) > budget:
        chunk //= 2
    return chunk


def choose_chunk_size(
    length: int,
    cfg: TrunkConfig,
    batch: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> int | None:
    """The chunk size for ``chunk_size="auto"``.

    Args:
        length: L, residues per sequence (padded length of the batch).
        cfg: the trunk's sizes.
        batch: B, sequences folded together.
        device: where the trunk runs (default CPU); its free memory is probed with ``available_memory``.
        dtype: the trunk's dtype.

    Returns:
        ``memory_chunk_size`` for the free memory; on the CPU at most ``CPU_CHUNK_ELEMENTS // L`` rows (a power
        of two), ``None`` (unchunked) when that covers the whole sequence and memory allows.
    """
    device = torch.device(device or "cpu")
    itemsize = torch.empty((), dtype=dtype).element_size()
    chunk = memory_chunk_size(length, cfg, available_memory(device), batch, itemsize)
    if device.type == "cpu" and CPU_CHUNK_ELEMENTS // length < length:
        fast = _power_of_two_below(max(1, CPU_CHUNK_ELEMENTS // length))
        chunk = fast if chunk is None else min(chunk, fast)
    return chunk
