"""Which dtypes ESMFold runs in: the explicit choice, the reference default, or ``"auto"`` per device.

ESMFold has two parts with different needs: the 3B-parameter language model, whose time is matrix products, and
the trunk + structure module, whose recycled pair updates and frame geometry are where precision shows in the
coordinates. The original runs the LM in fp16 and the rest in fp32 on a GPU.

``"auto"`` (the CLI's default) picks, per device, what the full-size benchmark (``benchmarks/bench_full_size.py``,
numbers in its README) showed to be the fastest choice whose coordinates stay as close to fp32 as fp32 stays to
the reference implementation:

* CUDA: LM float16, trunk float32 (the original's split).
* A CPU with AVX-512 (measured on an Intel Xeon with AMX): LM float16, trunk float32. It folds as fast as fp32
  (within 1%), its Cα differ from fp32 no more than transformers' fp32 does (0.12 against 0.18 Å at L = 128), and
  it needs 5.7 GB less memory; an fp16 checkpoint (the official LM file's published size, 5.7 GB for 2.8 B
  parameters, implies fp16) is used as stored, memory-mapped, without a conversion. A bf16 LM was 2-10% faster
  but moved Cα 4x as much; bf16 throughout was 1.7-2x faster but moved Cα by several Å on the randomized model,
  so it is used only when asked for (``--dtype bfloat16``).
* Any other CPU (and MPS): float32 throughout; fp16 products were not measured there. A half dtype asked for on a
  CPU that only emulates it (``cpu_dtypes``: bf16 without AVX-512 BF16 / AMX, fp16 without AVX-512) is used, with a
  warning: emulated bf16 was about 7x slower than fp32 on an AVX2-only AMD EPYC.

``None`` keeps the reference numbers: trunk float32; LM float16 on CUDA, float32 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esmfold_lite.cpu_dtypes import cpu_has_avx512, warn_if_emulated
from esmfold_lite.devices import as_dtype

AUTO = "auto"


@dataclass(frozen=True)
class Precision:
    """The dtypes of one model: ``lm`` for the language model, ``trunk`` for everything else; ``reason`` says why
    when they were chosen automatically."""

    lm: torch.dtype
    trunk: torch.dtype
    reason: str = ""

    def describe(self) -> str:
        """E.g. ``"language model float16, trunk float32 (auto on a CPU with AVX-512)"``."""
        text = f"language model {str(self.lm).removeprefix('torch.')}, trunk {str(self.trunk).removeprefix('torch.')}"
        return f"{text} ({self.reason})" if self.reason else text


def auto_precision(device: torch.device) -> Precision:
    """The fastest safe dtypes on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return Precision(torch.float16, torch.float32, "auto on a GPU: the original's split")
    if device.type == "cpu" and cpu_has_avx512():
        return Precision(torch.float16, torch.float32, "auto on a CPU with AVX-512")
    return Precision(torch.float32, torch.float32, f"auto on {device.type}: float32")


def resolve_precision(
    device: torch.device,
    lm_device: torch.device,
    dtype: torch.dtype | str | None = None,
    lm_dtype: torch.dtype | str | None = None,
) -> Precision:
    """The dtypes ``load_model(dtype=, lm_dtype=)`` asks for: each a dtype (or its name, ``"bf16"``, ...),
    ``"auto"`` or None. ``dtype="auto"`` also makes an unset ``lm_dtype`` automatic; the LM's automatic or default
    dtype follows ``lm_device``."""
    dtype_auto = isinstance(dtype, str) and dtype.lower() == AUTO
    lm_auto = isinstance(lm_dtype, str) and lm_dtype.lower() == AUTO or (dtype_auto and lm_dtype is None)
    trunk = auto_precision(device).trunk if dtype_auto else as_dtype(dtype) or torch.float32
    if lm_auto:
        lm_auto_choice = auto_precision(lm_device)
        lm, reason = lm_auto_choice.lm, lm_auto_choice.reason
    else:
        lm = as_dtype(lm_dtype) or (torch.float16 if lm_device.type == "cuda" else torch.float32)
        reason = auto_precision(device).reason if dtype_auto else ""
    warn_if_emulated(trunk, device)
    warn_if_emulated(lm, lm_device)
    return Precision(lm, trunk, reason)
