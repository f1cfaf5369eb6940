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


@pytest.fixture
def no_half_hardware(monkeypatch):
    """A CPU like the AVX2-only AMD EPYC of the measurement: no AVX-512, no bf16/fp16 instructions."""
    from esmfold_lite import cpu_dtypes

    monkeypatch.setattr(cpu_dtypes, "cpu_flags", lambda: frozenset({"avx2", "f16c"}))
    monkeypatch.setattr(cpu_dtypes, "cpu_has_avx512", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_avx512", lambda: False)  # what auto reads
    monkeypatch.setattr(cpu_dtypes, "_warned", set())


def emulation_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "is emulated" in r.getMessage()]


def test_half_precision_on_a_cpu_without_it_warns_once_with_the_measured_reason(
    no_half_hardware, official_checkpoint, caplog
):
    import esmfold_lite

    esmfold_lite.load_model(official_checkpoint, dtype="bf16")
    esmfold_lite.load_language_model(official_checkpoint.with_name("esm2_t36_3B_UR50D.pt"), dtype="bfloat16")
    (message,) = emulation_warnings(caplog)  # once per dtype, however many loads
    assert "no bfloat16 instructions (no AVX-512 BF16 or AMX)" in message
    assert "7x slower than float32 on an AVX2 AMD EPYC" in message and "--dtype / --lm-dtype float32" in message
    resolve_precision(CPU, CPU, None, "fp16")
    assert "no float16 instructions" in emulation_warnings(caplog)[-1]


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_every_command_warns_for_an_emulated_dtype(no_half_hardware, official_checkpoint, tmp_path, caplog, command):
    from esmfold_lite.cli import main

    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n")
    model = official_checkpoint if command == "predict" else official_checkpoint.with_name("esm2_t36_3B_UR50D.pt")
    extra = ["--num-recycles", "0", "--lm-dtype", "bf16"] if command == "predict" else ["--dtype", "bf16"]
    argv = [command, str(fasta), "-o", str(tmp_path / "out"), "--model", str(model), "--device", "cpu", *extra]
    assert main(argv) == 0
    assert "no bfloat16 instructions" in " ".join(emulation_warnings(caplog))


@pytest.mark.parametrize(("dtype", "lm_dtype"), [("auto", None), (None, None), ("fp32", "float32"), ("auto", "auto")])
def test_auto_and_float32_never_warn(no_half_hardware, caplog, dtype, lm_dtype):
    chosen = resolve_precision(CPU, CPU, dtype, lm_dtype)
    assert (chosen.lm, chosen.trunk) == (F32, F32)
    assert emulation_warnings(caplog) == []


def test_half_precision_with_the_hardware_or_on_a_gpu_does_not_warn(monkeypatch, caplog):
    from esmfold_lite import cpu_dtypes

    monkeypatch.setattr(cpu_dtypes, "_warned", set())
    monkeypatch.setattr(cpu_dtypes, "cpu_has_avx512", lambda: False)
    monkeypatch.setattr(cpu_dtypes, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    resolve_precision(CPU, CPU, "bf16", "bf16")
    monkeypatch.setattr(cpu_dtypes, "cpu_flags", lambda: frozenset())
    cpu_dtypes.warn_if_emulated(F16, CUDA)  # the GPU computes it: the CPU's flags do not matter
    assert emulation_warnings(caplog) == []


def test_the_cpu_probe_answers():
    from esmfold_lite import cpu_dtypes

    assert isinstance(cpu_dtypes.cpu_flags(), frozenset) and isinstance(cpu_dtypes.hardware_half(BF16), bool)
    assert cpu_dtypes.hardware_half(F32)
