"""Which dtypes ESMFold runs in: the explicit choice, the reference default, or ``"auto"`` per device.

ESMFold has two parts with different needs: the 3B-parameter language model, whose time is matrix products, and
the trunk + structure module, whose recycled pair updates and frame geometry are where precision shows in the
coordinates. The original runs the LM in fp16 and the rest in fp32 on a GPU.

``"auto"`` (the CLI's default) picks the fastest choice whose coordinates stayed close to fp32 in the full-size
CPU benchmark (``benchmarks/bench_full_size.py``, README there):

* CUDA: LM float16, trunk float32 (the original's split).
* A CPU with bf16 matrix units (Intel AMX or AVX512-BF16): LM bfloat16, trunk float32.
* Any other CPU (and MPS): float32 throughout; half-precision products are emulated there and slower than fp32.

``None`` keeps the reference numbers: trunk float32; LM float16 on CUDA, float32 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esmfold_lite.lm.load import as_dtype

AUTO = "auto"


def cpu_has_bf16_matmul() -> bool:
    """True when this CPU multiplies bf16 matrices in hardware (Intel AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    """The dtypes of one model: ``lm`` for the language model, ``trunk`` for everything else."""

    lm: torch.dtype
    trunk: torch.dtype

    def describe(self) -> str:
        name = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
        return f"language model {name.get(self.lm, self.lm)}, trunk {name.get(self.trunk, self.trunk)}"


def auto_precision(device: torch.device) -> Precision:
    """The fastest safe dtypes on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return Precision(lm=torch.float16, trunk=torch.float32)
    if device.type == "cpu" and cpu_has_bf16_matmul():
        return Precision(lm=torch.bfloat16, trunk=torch.float32)
    return Precision(lm=torch.float32, trunk=torch.float32)


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
    if dtype_auto:
        trunk = auto_precision(device).trunk
    else:
        trunk = as_dtype(dtype) or torch.float32
    if lm_auto:
        lm = auto_precision(lm_device).lm
    else:
        lm = as_dtype(lm_dtype) or (torch.float16 if lm_device.type == "cuda" else torch.float32)
    return Precision(lm=lm, trunk=trunk)
