"""Memory and precision paths give the same numbers: chunk plans (fixed and "auto"), in-place updates, bf16; and
the pair memory alive at once stays bounded.

No timings here: speed and peak memory at full size are measured by benchmarks/bench_cpu.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from esmfold_reference import randomize_, tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.fold import auto_chunk
from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.fold.chunking import LEAN_BLOCKS, ChunkPlan, chunk_apply, residual_add_
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
@pytest.mark.parametrize("chunk_size", [5, 8])
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


def test_block_updates_its_pair_input_in_place_without_autograd():
    """The trunk hands z over: the block adds every pair update into it; s is left alone. Same numbers as the
    out-of-place autograd pass, for the fast and the lean plan."""
    block = randomize_(TriangularSelfAttentionBlock(32, 16, 16, 8), seed=3).eval()
    g = torch.Generator().manual_seed(4)
    s, z = torch.randn(1, 9, 32, generator=g), torch.randn(1, 9, 9, 16, generator=g)
    mask = torch.ones(1, 9)
    with torch.enable_grad():
        expected_s, expected_z = block(s, z, mask)
    for chunk_size, pair_blocks in ((None, 1), (4, 1), (2, 3)):
        s_before, z_owned = s.clone(), z.clone()
        with torch.inference_mode():
            out_s, out_z = block(s, z_owned, mask, chunk_size, pair_blocks)
        assert out_z.data_ptr() == z_owned.data_ptr() and torch.equal(s, s_before)
        assert max_diff(out_s, expected_s.detach()) <= 1e-5 and max_diff(out_z, expected_z.detach()) <= 1e-5


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


# ---- chunk plans and chunk_size="auto" ------------------------------------------------------------------------


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize(
    "plan",
    [ChunkPlan(None, 2), ChunkPlan(4, 1), ChunkPlan(3, 2), ChunkPlan(2, 8)],
    ids=lambda p: f"{p.rows}x{p.pair_blocks}",
)
def test_in_place_plans_equal_unchunked_at_several_lengths(model, unchunked, sequence, plan):
    """Every plan (rows per slice; one full-size triangle operand, or the lean tiled schedule) gives the numbers of
    the plain unchunked pass, at lengths 12, 21 and 33 and with recycling (pair state updated in place)."""
    expected = unchunked[sequence]
    got = model.fold(sequence, num_recycles=1, chunk_size=plan)
    assert max_diff(got.positions, expected.positions) <= POSITION_TOL
    assert max_diff(got.plddt, expected.plddt) <= 1e-3
    assert max_diff(got.pae, expected.pae) <= 1e-3
    assert max_diff(got.ptm, expected.ptm) <= 1e-5
    assert (got.distogram_logits is None) == plan.lean  # lean plans never hold an L×L×bins tensor


def test_chunk_plan_of_an_integer_below_the_length_is_the_leanest():
    assert ChunkPlan.of(None, 100) == ChunkPlan()
    assert ChunkPlan.of(100, 100) == ChunkPlan(100, 1)
    assert ChunkPlan.of(50, 100) == ChunkPlan(50, LEAN_BLOCKS)
    plan = ChunkPlan(3, 2)
    assert ChunkPlan.of(plan, 10) is plan
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            ChunkPlan.of(bad, 10)


def test_auto_is_unchunked_for_small_inputs_with_plenty_of_memory():
    cfg = TrunkConfig()  # esmfold_v1 widths
    assert auto_chunk.choose_chunk_plan(100, cfg, available=64 * 2**30) == ChunkPlan()
    assert auto_chunk.choose_chunk_plan(100, cfg) == ChunkPlan()  # this machine's real free memory
    assert isinstance(auto_chunk.available_memory(), int) and auto_chunk.available_memory() > 0


def test_auto_plan_gets_leaner_as_memory_shrinks_and_never_refuses():
    cfg = TrunkConfig()
    gib = 2**30
    plans = [auto_chunk.choose_chunk_plan(2000, cfg, available=n * gib) for n in (512, 16, 8, 6, 4)]
    assert plans[0] == ChunkPlan(8, 1)  # plenty of memory: the CPU speed cap (16384 // 2000 -> 8 rows), fast plan
    blocks = [p.pair_blocks for p in plans]
    assert blocks == sorted(blocks) and blocks[-1] > 1
    for n, plan in zip((512, 16, 8, 6, 4), plans, strict=True):
        assert auto_chunk.trunk_peak_bytes(2000, cfg, plan) <= auto_chunk.SAFETY * n * gib
    assert auto_chunk.choose_chunk_plan(2000, cfg, available=gib) == ChunkPlan(1, LEAN_BLOCKS)  # tried anyway


def test_auto_caps_cpu_rows_and_uses_whole_rows_on_gpu_sized_memory(monkeypatch):
    cfg = TrunkConfig()
    monkeypatch.setattr(auto_chunk, "available_memory", lambda device=None: 512 * 2**30)
    assert auto_chunk.choose_chunk_plan(1024, cfg) == ChunkPlan(16, 1)  # CPU speed cap: 16384 positions per chunk
    assert auto_chunk.choose_chunk_plan(256, cfg) == ChunkPlan(64, 1)
    assert auto_chunk.choose_chunk_plan(100, cfg) == ChunkPlan()


def test_auto_estimate_grows_with_rows_and_length_and_shrinks_with_blocks():
    cfg = TrunkConfig()
    by_rows = [auto_chunk.trunk_peak_bytes(1024, cfg, ChunkPlan(r, 1)) for r in (1, 16, 256, None)]
    assert by_rows == sorted(by_rows)
    by_blocks = [auto_chunk.trunk_peak_bytes(4000, cfg, ChunkPlan(4, n)) for n in (1, 4, 8)]
    assert by_blocks == sorted(by_blocks, reverse=True)
    pair = 4000**2 * cfg.pairwise_state_dim * 4
    assert by_blocks[-1] <= 1.5 * pair  # the leanest plan: at most 1.5x the pair representation
    plan = ChunkPlan(32, 1)
    assert auto_chunk.trunk_peak_bytes(512, cfg, plan) < auto_chunk.trunk_peak_bytes(1024, cfg, plan)
    assert auto_chunk.trunk_peak_bytes(512, cfg, plan, batch=2) >= 2 * auto_chunk.trunk_peak_bytes(512, cfg, plan)


def test_fold_auto_picks_a_plan_and_keeps_the_numbers(model, unchunked, monkeypatch):
    sequence = SEQUENCES[0]
    cfg = model.cfg.trunk
    picked = []
    choose = auto_chunk.choose_chunk_plan

    def recording(*args, **kwargs):
        picked.append(choose(*args, **kwargs))
        return picked[-1]

    monkeypatch.setattr("esmfold_lite.fold.esmfold.choose_chunk_plan", recording)
    got = model.fold(sequence, num_recycles=1)  # fold's default is "auto"; plenty of memory: unchunked
    assert picked == [ChunkPlan()]
    assert max_diff(got.positions, unchunked[sequence].positions) <= POSITION_TOL

    # a budget that only the leanest plan with 4 rows fits
    lean = ChunkPlan(4, LEAN_BLOCKS)
    tight = math.ceil(auto_chunk.trunk_peak_bytes(len(sequence), cfg, lean) / auto_chunk.SAFETY)
    monkeypatch.setattr(auto_chunk, "available_memory", lambda device=None: tight)
    got = model.fold(sequence, num_recycles=1, chunk_size="auto")
    assert picked[-1] == lean
    assert max_diff(got.positions, unchunked[sequence].positions) <= POSITION_TOL
    with pytest.raises(ValueError, match="auto"):
        model.fold(sequence, chunk_size="fast")


PEAK_SCRIPT = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from randomize import randomize_
from esmfold_lite.fold.chunking import reuse_buffers
from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock

def rss(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key))

def run(length, rows, blocks):
    z = torch.randn(1, length, length, 64)
    s, mask = torch.randn(1, length, 32), torch.ones(1, length)
    with torch.no_grad(), reuse_buffers():
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak RSS
        before = rss("VmRSS:")
        block(s, z, mask, rows, blocks)
        return (rss("VmHWM:") - before) / z.nbytes

torch.set_num_threads(1)
block = randomize_(TriangularSelfAttentionBlock(32, 64, 16, 32), seed=0).eval()
for blocks in (1, 8):
    run(48, 2, blocks)  # warm-up: code pages, thread pool
print(json.dumps({blocks: run(256, 2, blocks) for blocks in (1, 8)}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_pair_memory_alive_at_once_stays_bounded():
    """One trunk block at L=256 (c_z = 64) with 2 rows per slice: besides z itself, the lean plan holds at most
    half a pair tensor at any moment (pending tiles, one row block's features, the triangle bias) plus one slice's
    temporaries, the fast plan about one pair tensor more (the triangle multiplication's operand).

    Measured as the process's peak RSS over its RSS before the call, with glibc mapping every allocation above
    64 KiB on its own, so freed memory leaves the RSS at once and the peak counts only what was alive together."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(Path(__file__).parent)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    extra = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    slices = 10 * 2 / 256  # ten c_z-wide rows of L positions per sliced row (auto_chunk's estimate), 2 rows
    assert extra[LEAN_BLOCKS] <= 0.5 + slices, extra  # 0.44 schedule + 0.05 bias and mask: 1.5x the pair at large L
    # the fast plan measures 1.14-1.18 here from run to run (the heap's small allocations): bounded with that spread
    assert extra[1] <= 1.15 + slices, extra


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


@pytest.mark.parametrize("lm_dtype", [torch.bfloat16, torch.float16])
def test_lm_dtype_and_lm_device(model_path, unchunked, lm_dtype):
    lm_half = load_model(model_path, lm_dtype=lm_dtype, lm_device="cpu")
    params = list(lm_half.esm.parameters())
    assert {p.dtype for p in params} == {lm_dtype} and {p.device.type for p in params} == {"cpu"}
    assert lm_half.esm_s_combine.dtype == torch.float32
    sequence = SEQUENCES[0]
    _assert_close_to_fp32(lm_half.fold(sequence, num_recycles=1), unchunked[sequence])


# A half-precision ESM-2 on the CPU against fp32, per residue: |h - h_fp32| / |h_fp32| over every layer's states.
# Measured on this randomized esm2_t6_8M-shaped model: 1.3e-3 (fp16, 11 significant bits) and 1.0e-2 (bf16, 8 bits).
HALF_LM_TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("lm_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_lm_runs_on_cpu_within_tolerance(lm_dtype):
    """The original's fp16 LM fails on the CPU ("not implemented for 'Half'" in its LayerNorm); this one runs, with
    padding, contacts and every layer, and stays within ``HALF_LM_TOL`` of fp32."""
    from esmfold_lite.lm.esm2 import ESM2, ESM2Config

    reference = randomize_(ESM2(ESM2Config(6, 320, 20)), seed=3).eval()
    half = randomize_(ESM2(ESM2Config(6, 320, 20)), seed=3).to(lm_dtype).eval()
    tokens = torch.randint(4, 24, (2, 60), generator=torch.Generator().manual_seed(0))
    tokens[:, 0], tokens[:, -1], tokens[1, 39], tokens[1, 40:] = 0, 2, 2, 1  # <cls> ... <eos> <pad>...
    with torch.no_grad():
        expected = reference(tokens, repr_layers=range(7))["representations"]
        got = half(tokens, repr_layers=range(7), return_contacts=True)
    assert got["contacts"].isfinite().all()
    residues = tokens != 1
    for layer, states in got["representations"].items():
        assert states.dtype == lm_dtype
        error = (states.float() - expected[layer]).norm(dim=-1) / expected[layer].norm(dim=-1)
        assert error[residues].max().item() <= HALF_LM_TOL[lm_dtype], f"layer {layer}"
