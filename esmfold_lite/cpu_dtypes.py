"""Which half-precision dtypes this CPU computes in hardware, and the warning when one it only emulates is asked for.

The facts, in one place: whether the CPU has AVX-512 (torch's own probe, ``torch.cpu._is_avx512_supported``, which
also decides ``torch.backends.cpu.get_cpu_capability()``) and its flags (``/proc/cpuinfo``; none known elsewhere):

* bfloat16 runs in hardware with AVX-512 BF16 (``avx512_bf16``) or AMX (``amx_bf16``): Intel Xeon from Cooper
  Lake / Sapphire Rapids, AMD EPYC from Zen 4. Elsewhere torch emulates it, and it is far slower than float32:
  ``embed`` of 12 sequences with a 12-layer, 1280-wide ESM-2 took 57 s in bfloat16 against 8.3 s in float32 on an
  AVX2-only AMD EPYC.
* float16 counts as hardware with AVX-512 (where ``fold.precision``'s ``auto`` measured an fp16 language model as
  fast as fp32, so ``auto`` never picks what is warned about here) or AVX-512 FP16 / AMX-FP16.

`warn_if_emulated` is called where a dtype is settled for a device (``lm.load.load_language_model``,
``fold.precision.resolve_precision``), so every command and Python load warns; once per dtype and process.
"""

from __future__ import annotations

import logging
from functools import cache

import torch

logger = logging.getLogger(__name__)

HARDWARE_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}
_warned: set[torch.dtype] = set()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none to read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_avx512() -> bool:
    """True when this CPU has AVX-512 (where an fp16 language model was measured to run as fast as fp32)."""
    return bool(getattr(torch.cpu, "_is_avx512_supported", lambda: False)())


def hardware_half(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` in hardware (any dtype but bfloat16 and float16 does)."""
    if dtype not in HARDWARE_FLAGS:
        return True
    if dtype == torch.float16 and cpu_has_avx512():
        return True
    return not cpu_flags().isdisjoint(HARDWARE_FLAGS[dtype])


def emulated_reason(dtype: torch.dtype) -> str:
    """Why ``dtype`` is a bad choice on this CPU (see the module docstring), with what to use instead."""
    if dtype == torch.bfloat16:
        missing = "bfloat16 instructions (no AVX-512 BF16 or AMX)"
    else:
        missing = "float16 instructions (no AVX-512, AVX-512 FP16 or AMX-FP16)"
    name = str(dtype).removeprefix("torch.")
    return (
        f"this CPU has no {missing}: {name} is emulated, and emulated bfloat16 was about 7x slower than float32 on an "
        "AVX2 AMD EPYC (embed, 12 x 1280 ESM-2); use float32 (--dtype / --lm-dtype float32), or auto where the "
        "command has it (predict, fold-proteome)"
    )


def warn_if_emulated(dtype: torch.dtype | None, device: torch.device | None) -> None:
    """Log a warning (once per dtype and process) when ``dtype`` runs on a CPU ``device`` (None: the CPU) that only
    emulates it."""
    if dtype is None or (device is not None and device.type != "cpu") or dtype in _warned or hardware_half(dtype):
        return
    _warned.add(dtype)
    logger.warning(emulated_reason(dtype))
