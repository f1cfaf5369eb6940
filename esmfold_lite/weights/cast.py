"""A state dict in the dtype it will run in, one tensor at a time: never a second copy of the weights.

The readers hand back tensors that are memory-mapped from the checkpoint file (``torch.load(mmap=True)`` for
zip-format ``.pt`` files, ``safetensors``), so reading costs nothing until a tensor is used. A tensor already in the
requested dtype stays mapped (its pages are read, once, when the model first uses it). One in another dtype is
converted, and the file pages the conversion read are handed back to the kernel at once (``madvise(MADV_DONTNEED)``
on the pages that lie wholly inside the source tensor's storage, and only inside a file-backed mapping): peak memory
is the converted model plus one tensor, not the converted model plus the touched file. Dropping a clean page of a
file mapping loses nothing; a later read maps it again from the file.

Tensors that live in ordinary memory (a legacy ``.pt`` read whole) are freed as the dict entry is replaced, when
nothing else holds them. Without ``/proc/self/maps`` (not Linux) no pages are released: the result is the same,
the peak higher.
"""

from __future__ import annotations

import ctypes
import mmap
from bisect import bisect_right
from pathlib import Path

import torch

MADV_DONTNEED = 4  # Linux
_MAPS = Path("/proc/self/maps")


def _file_mappings() -> list[tuple[int, int]]:
    """Sorted ``(start, end)`` address ranges of this process's mappings of regular files."""
    if not _MAPS.is_file():
        return []
    ranges = []
    for line in _MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):  # an inode and a path
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return sorted(ranges)


def _madvise() -> ctypes._CFuncPtr | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return function


class _PageReleaser:
    """Drops the resident file pages behind tensors whose storage lies inside one file mapping."""

    def __init__(self) -> None:
        self.ranges = _file_mappings()
        self.starts = [start for start, _ in self.ranges]
        self.madvise = _madvise() if self.ranges else None

    def release(self, tensor: torch.Tensor) -> None:
        if self.madvise is None or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        begin, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        index = bisect_right(self.starts, begin) - 1
        if index < 0 or end > self.ranges[index][1]:
            return  # not (wholly) file-backed: ordinary memory is never released behind its owner's back
        page = mmap.PAGESIZE
        first, last = -(-begin // page) * page, end // page * page  # only pages no other storage shares
        if last > first:
            self.madvise(first, last - first, MADV_DONTNEED)


def cast_state_(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """In place: every floating tensor of ``state`` in ``dtype`` (None: unchanged); returns ``state``.

    Entries that share one tensor (a tied LM head) still share one converted tensor. Integer and bool tensors are
    left as they are.
    """
    if dtype is None:
        return state
    releaser: _PageReleaser | None = None
    converted: dict[int, torch.Tensor] = {}
    for key, tensor in state.items():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            continue
        if id(tensor) not in converted:
            releaser = releaser or _PageReleaser()
            converted[id(tensor)] = tensor.to(dtype)
            releaser.release(tensor)
        state[key] = converted[id(tensor)]
    return state
