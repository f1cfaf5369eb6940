"""Memory and precision paths give the same numbers: chunking (fixed and "auto"), in-place residuals, bf16.

No timings here: speed and peak memory are measured by benchmarks/bench_cpu.py.
"""

from __future__ import annotations

import pytest
import torch
from esmfold_reference import randomize_, tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.fold import auto_chunk
from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.fold.chunking import chunk_apply, residual_add_
from esmfold_lite.fold.config import TrunkConfig
from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock

POSITION_TOL = 1e-4  # Å: chunked / auto / in-place paths against the plain unchunked pass
# bf16 against fp32 (documented in benchmarks/README.md). bf16 keeps 8 significant bits; structure-module geometry
# (frames, quaternion updates, IPA points and attention) and the heads' softmaxes stay fp32. Randomized weights make
# the model chaotic, so differences are larger than a trained model's: on this model (seed 11) the measured
# max / mean atom differences are 0.6-0.8 / 0.15-0.23 Å (model in bf16) and 0.7-0.9 / 0.18-0.20 Å (fp32 model under
# CPU autocast), pLDDT within 0.3; over seeds 1-3 up to 2.5 / 0.62 Å. Bounds: about twice this model's values.
BF16_POSITION_TOL = 2.0  # Å, max over existing atoms
BF16_MEAN_POSITION_TOL = 0.5  # Å, mean over existing atoms
BF16_PLDDT_TOL = 1.0  # pLDDT points (0-100)

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "GSHMLEDPVAGW", "ACDEFGHIKLMNPQRSTVWYX"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    reference = tiny_hf_esmfold(num_blocks=2, sm_blocks=3, max_recycles=1, seed=11)
    esmfold_pt, _ = write_fair_esmfold(reference, tmp_path_factory.mktemp("perf"))
    return esmfold_pt


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path)


@pytest.fixture(scope="module")
def unchunked(model):
    return {sequence: model.fold(sequence, num_recycles=1) for sequence in SEQUENCES}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("chunk_size", [1, 5, 8])
def test_chunked_equals_unchunked_at_several_lengths(model, unchunked, sequence, chunk_size):
    expected = unchunked[sequence]
    got = model.fold(sequence, num_recycles=1, chunk_size=chunk_size)
    assert max_diff(got.positions, expected.positions) <= POSITION_TOL
    assert max_diff(got.plddt, expected.plddt) <= 1e-3
    assert max_diff(got.pae, expected.pae) <= 1e-3


def test_chunked_padded_batch_equals_single_runs(model, unchunked):
    """Padding puts rows with different masks into one chunk (the triangle attention's per-row bias path)."""
    batch = model.fold(SEQUENCES, num_recycles=1, chunk_size=5)
    for i, sequence in enumerate(SEQUENCES):
        n = len(sequence)
        assert max_diff(batch.positions[i, :n], unchunked[sequence].positions[0]) <= POSITION_TOL
        assert max_diff(batch.pae[i, :n, :n], unchunked[sequence].pae[0]) <= 1e-3


def test_inference_pass_equals_autograd_pass(model):
    """In-place residuals (autograd off) and out-of-place ones (autograd on) give the same numbers."""
    batch = encode_batch(SEQUENCES[1])
    with torch.no_grad():
        inplace = model(batch.aatype, batch.mask, batch.residue_index, num_recycles=1, chunk_size=4)
    with torch.enable_grad():
        tracked = model(batch.aatype, batch.mask, batch.residue_index, num_recycles=1, chunk_size=4)
    assert tracked["positions"].requires_grad
    assert max_diff(inplace["positions"], tracked["positions"].detach()) <= POSITION_TOL
    assert max_diff(inplace["s_z"], tracked["s_z"].detach()) <= 1e-4


def test_block_leaves_its_inputs_untouched_without_autograd():
    block = randomize_(TriangularSelfAttentionBlock(32, 16, 16, 8), seed=3).eval()
    g = torch.Generator().manual_seed(4)
    s, z = torch.randn(1, 9, 32, generator=g), torch.randn(1, 9, 9, 16, generator=g)
    mask = torch.ones(1, 9)
    s_before, z_before = s.clone(), z.clone()
    with torch.inference_mode():
        first = block(s, z, mask, chunk_size=4)
        second = block(s, z, mask, chunk_size=4)
    assert torch.equal(s, s_before) and torch.equal(z, z_before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_residual_add_is_in_place_only_without_autograd():
    x, update = torch.zeros(3), torch.ones(3)
    with torch.no_grad():
        assert residual_add_(x, update) is x and x.tolist() == [1.0, 1.0, 1.0]
    y = torch.zeros(3, requires_grad=True)
    out = residual_add_(y, update)
    assert out is not y and out.requires_grad and y.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_chunk_apply_may_write_over_its_input(chunk_size):
    x = torch.arange(12.0).reshape(3, 4)
    rows = x.clone()
    result = chunk_apply(lambda r: 2 * r + 1, (rows,), (1,), chunk_size, out_dim=1, out=rows)
    assert result is rows and torch.equal(rows, 2 * x + 1)


# ---- chunk_size="auto" ----------------------------------------------------------------------------------------


def test_auto_is_unchunked_for_small_inputs_with_plenty_of_memory():
    cfg = TrunkConfig()  # esmfold_v1 widths
    assert auto_chunk.memory_chunk_size(100, cfg, available=64 * 2**30) is None
    assert auto_chunk.choose_chunk_size(100, cfg) is None  # this machine's real free memory
    assert isinstance(auto_chunk.available_memory(), int) and auto_chunk.available_memory() > 0


def test_auto_pick_shrinks_with_the_memory_budget():
    cfg = TrunkConfig()
    picks = [auto_chunk.memory_chunk_size(2000, cfg, available=gib * 2**30) for gib in (512, 64, 16, 12, 9)]
    assert picks[0] is None
    ints = picks[1:]
    assert all(isinstance(p, int) and p > 1 for p in ints)
    assert ints == sorted(ints, reverse=True) and ints[-1] < ints[0]
    # the pick's estimate fits the budget (SAFETY of 9 GiB), the next power of two's does not
    pick, budget = ints[-1], auto_chunk.SAFETY * 9 * 2**30
    assert auto_chunk.trunk_peak_bytes(2000, cfg, pick) <= budget < auto_chunk.trunk_peak_bytes(2000, cfg, 2 * pick)
    assert auto_chunk.memory_chunk_size(2000, cfg, available=2**30) == 1  # nothing fits: the smallest footprint


def test_auto_probes_free_memory_and_caps_cpu_chunks(monkeypatch):
    cfg = TrunkConfig()
    monkeypatch.setattr(auto_chunk, "available_memory", lambda device=None: 512 * 2**30)
    assert auto_chunk.choose_chunk_size(1024, cfg) == 16  # CPU speed cap: 16384 positions per chunk
    assert auto_chunk.choose_chunk_size(256, cfg) == 64
    assert auto_chunk.choose_chunk_size(100, cfg) is None
    tight = int(8.5 * 2**30)  # memory, not speed, decides
    monkeypatch.setattr(auto_chunk, "available_memory", lambda device=None: tight)
    assert auto_chunk.choose_chunk_size(2000, cfg) == auto_chunk.memory_chunk_size(2000, cfg, tight) < 8


def test_auto_estimate_grows_with_chunk_and_length():
    cfg = TrunkConfig()
    by_chunk = [auto_chunk.trunk_peak_bytes(1024, cfg, c) for c in (1, 16, 256, None)]
    assert by_chunk == sorted(by_chunk)
    assert auto_chunk.trunk_peak_bytes(512, cfg, 32) < auto_chunk.trunk_peak_bytes(1024, cfg, 32)
    assert auto_chunk.trunk_peak_bytes(512, cfg, 32, batch=2) == 2 * auto_chunk.trunk_peak_bytes(512, cfg, 32)


def test_fold_auto_picks_a_chunk_and_keeps_the_numbers(model, unchunked, monkeypatch):
    sequence = SEQUENCES[0]
    cfg = model.cfg.trunk
    picked = []
    choose = auto_chunk.choose_chunk_size

    def recording(*args, **kwargs):
        picked.append(choose(*args, **kwargs))
        return picked[-1]

    monkeypatch.setattr("esmfold_lite.fold.esmfold.choose_chunk_size", recording)
    got = model.fold(sequence, num_recycles=1, chunk_size="auto")  # plenty of memory: unchunked
    assert picked == [None]
    assert max_diff(got.positions, unchunked[sequence].positions) <= POSITION_TOL

    # a budget that only a chunk of 4 rows fits
    tight = auto_chunk.trunk_peak_bytes(len(sequence), cfg, 4) / auto_chunk.SAFETY
    monkeypatch.setattr(auto_chunk, "available_memory", lambda device=None: int(tight))
    got = model.fold(sequence, num_recycles=1, chunk_size="auto")
    assert picked[-1] == 4
    assert max_diff(got.positions, unchunked[sequence].positions) <= POSITION_TOL
    with pytest.raises(ValueError, match="auto"):
        model.fold(sequence, chunk_size="fast")


# ---- precision and devices ------------------------------------------------------------------------------------


def _assert_close_to_fp32(pred, expected):
    diff = (pred.positions.float() - expected.positions).abs()[expected.atom_mask.bool()]
    assert diff.max().item() <= BF16_POSITION_TOL
    assert diff.mean().item() <= BF16_MEAN_POSITION_TOL
    assert max_diff(pred.plddt.float(), expected.plddt) <= BF16_PLDDT_TOL


def test_bf16_trunk_runs_within_tolerance(model_path, unchunked):
    half = load_model(model_path, dtype=torch.bfloat16)
    assert half.trunk.blocks[0].tri_mul_out.linear_z.weight.dtype == torch.bfloat16
    assert next(half.esm.parameters()).dtype == torch.float32  # the LM keeps its own dtype on CPU
    sequence = SEQUENCES[0]
    pred = half.fold(sequence, num_recycles=1, chunk_size=8)
    assert pred.positions.dtype == torch.float32  # geometry is fp32
    _assert_close_to_fp32(pred, unchunked[sequence])


def test_cpu_autocast_bf16_runs_within_tolerance(model, unchunked):
    sequence = SEQUENCES[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model.fold(sequence, num_recycles=1)
    _assert_close_to_fp32(pred, unchunked[sequence])


def test_lm_dtype_and_lm_device(model_path, unchunked):
    lm_half = load_model(model_path, lm_dtype=torch.bfloat16, lm_device="cpu")
    params = list(lm_half.esm.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"cpu"}
    assert lm_half.esm_s_combine.dtype == torch.float32
    sequence = SEQUENCES[0]
    _assert_close_to_fp32(lm_half.fold(sequence, num_recycles=1), unchunked[sequence])
