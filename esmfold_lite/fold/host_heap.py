"""Keep the C heap's freed memory inside the process for the length of a CPU forward pass.

The chunked trunk allocates and frees temporaries of a few MiB per slice, thousands of times per block. glibc's
malloc hands such memory back to the kernel as soon as enough of it is free at the top of the heap (its trim
threshold follows the largest freed block, so it is often exceeded), and the next slice's allocation faults the same
pages in again, one 4 KiB page at a time. Measured on one full-width block at L = 512 on 2 cores: 3 s of system time
(page faults) against 21 s of user time; keeping it made the whole pass at L = 512 10-15% faster.

``kept_heap()`` sets two malloc parameters once per process (glibc only, CPU only): blocks below 32 MiB come from the
heap (``M_MMAP_THRESHOLD``; larger ones, the full-size pair buffers, are mapped and unmapped as before) and the heap
is not trimmed while a pass runs (``M_TRIM_THRESHOLD``). When the outermost ``kept_heap()`` exits, ``malloc_trim(0)``
gives every free page back, so a process holds no more memory between passes than before. Values the user chose
(glibc's ``MALLOC_*_`` environment variables or ``GLIBC_TUNABLES``) are left alone, as is every other C library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt takes: no trim while a pass runs (malloc_trim after)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_DEPTH: ContextVar[int] = ContextVar("esmfold_lite_kept_heap", default=0)
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not glibc, or the user tuned malloc


def _glibc() -> ctypes.CDLL | None:
    """glibc with malloc parameters set as described above, or None where that does not apply."""
    global _libc
    if _libc is False:
        _libc = None
        user_tuned = any(key in os.environ for key in USER_SETTINGS)
        name = ctypes.util.find_library("c")
        if not user_tuned and name:
            try:
                libc = ctypes.CDLL(name)
                libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl, macOS and Windows do not)
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                return None
            mapped = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            if mapped and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES):
                _libc = libc
    return _libc


@contextlib.contextmanager
def kept_heap(device: torch.device | str) -> Iterator[None]:
    """Within this context (on the CPU, with glibc) freed heap memory stays in the process for reuse; it is
    returned to the kernel when the outermost context exits. Elsewhere it does nothing."""
    libc = _glibc() if torch.device(device).type == "cpu" else None
    if libc is None:
        yield
        return
    token = _DEPTH.set(_DEPTH.get() + 1)
    try:
        yield
    finally:
        _DEPTH.reset(token)
        if _DEPTH.get() == 0:
            libc.malloc_trim(0)
