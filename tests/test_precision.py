"""``fold.precision``: which dtypes ``load_model(dtype=, lm_dtype=)`` and ``--dtype``/``--lm-dtype`` choose."""

from __future__ import annotations

import pytest
import torch

from esmfold_lite.fold import precision
from esmfold_lite.fold.precision import resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


@pytest.mark.parametrize(
    ("device", "lm_device", "dtype", "lm_dtype", "avx512", "expected"),
    [
        (CPU, CPU, None, None, True, (F32, F32)),  # None: the reference numbers
        (CUDA, CUDA, None, None, True, (F16, F32)),  # the original's split on a GPU
        (CPU, CPU, "auto", None, True, (F16, F32)),
        (CPU, CPU, "auto", None, False, (F32, F32)),
        (CUDA, CUDA, "auto", None, False, (F16, F32)),
        (CUDA, CPU, "auto", None, False, (F32, F32)),  # --cpu-offload: the LM's dtype follows its device
        (CPU, CPU, "auto", "bfloat16", True, (BF16, F32)),
        (CPU, CPU, "bf16", None, True, (F32, BF16)),
        (CPU, CPU, torch.float32, "auto", True, (F16, F32)),
        (CPU, CPU, "AUTO", "fp32", True, (F32, F32)),
    ],
)
def test_resolve_precision(monkeypatch, device, lm_device, dtype, lm_dtype, avx512, expected):
    monkeypatch.setattr(precision, "cpu_has_avx512", lambda: avx512)
    chosen = resolve_precision(device, lm_device, dtype, lm_dtype)
    assert (chosen.lm, chosen.trunk) == expected
    assert ("auto" in chosen.describe()) == ("auto" in f"{dtype} {lm_dtype}".lower())


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown floating dtype"):
        resolve_precision(CPU, CPU, "int8")
    with pytest.raises(ValueError, match="unknown floating dtype torch.int64"):
        resolve_precision(CPU, CPU, torch.int64)  # a torch.dtype that is not floating: one line, not one per weight


def test_cpu_detection_answers():
    assert isinstance(precision.cpu_has_avx512(), bool)
