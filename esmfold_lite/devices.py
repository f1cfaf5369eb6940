"""The user's names for devices and dtypes -> the ``torch`` objects, checked against this machine.

``as_device`` and ``as_dtype`` are what every entry point (``load_model``, ``load_language_model``, the CLI's
``--device`` / ``--dtype``, the pipeline's run settings) resolves its arguments with, so that all of them take the
same names and refuse a bad one with the same message. Whether this CPU computes a half dtype in hardware is
``cpu_dtypes``'s.
"""

from __future__ import annotations

import torch

DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}
"""Short dtype names the CLI and ``as_dtype`` take -> torch's names."""


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.float16``, ``"float16"``, ``"fp16"``, ``"bf16"``, ... -> a floating ``torch.dtype`` (None stays None)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        name = DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
        resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"unknown floating dtype {dtype!r}; use float32, float16 or bfloat16")
    return resolved


def as_device(device: torch.device | str | None) -> torch.device | None:
    """``"cuda:1"``, ``torch.device("cpu")``, ... -> a ``torch.device`` this machine has (None stays None).

    Raises ValueError naming what is wrong and what to use instead: a name torch does not know, CUDA or MPS not
    available here, a CUDA index beyond the GPUs present.
    """
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r}: CUDA is not available ({why}); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu")
    return resolved
