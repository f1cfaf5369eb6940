"""GPU benchmark: full-size ESMFold (ESM-2 3B + 48 trunk blocks + 8 structure blocks) with randomized weights,
esmfold_lite against transformers' ``EsmForProteinFolding``, sized for one device call of a few minutes.

Not run yet: no GPU was available when it was written. One process; no step starts once ``--budget-s`` seconds have
passed, and results are written after every step, so a run cut short keeps what it measured. Step 2 runs first at
the first length only, then steps 3-5, then step 2 at the other lengths:

1. the model: a transformers ESMFold of esmfold_v1's shape built on the GPU, every parameter randomized there, saved
   as a transformers folder (its LM in fp16, as the released model) in ``--workdir``; esmfold_lite loads that folder
   with ``load_model`` (times of both);
2. side by side, for each L in ``--lengths`` and trunk dtype in ``--dtypes`` (the LM in fp16, as the original):
   the time of ``forward`` (``--num-recycles``; default: the model's 4 passes) after a warm-up call, the peak GPU
   memory of that call (``torch.cuda.max_memory_allocated``), esmfold_lite's chunk plan (``chunk_size="auto"``),
   and the largest Cα distance between the two implementations (same dtype) and to transformers fp32;
3. SDPA kernels: the fold at the first length in bf16 with ``torch.nn.attention.sdpa_kernel`` limited to one of
   flash, memory-efficient, cuDNN and math attention at a time: which fused kernels esmfold_lite's biased, masked
   attention runs on (an error: that kernel refused its inputs), and their times;
4. out-of-memory recovery: ``predict_fasta`` on one sequence of ``--oom-length`` residues in fp32 with chunking off
   (0 recycles), the process's GPU memory capped at ``--oom-cap-gib`` (``torch.cuda.set_per_process_memory_fraction``:
   a 24 GB card by default), so that the first attempt runs out of memory for real; reported: its status, the notes
   (the chunk size it got to), the time and the peak memory;
5. CPU offload: the LM on the CPU (``lm_device="cpu"``), the trunk in bf16 on the GPU, at the first length:
   time and peak GPU memory;
6. with ``--search-longest``, the longest L that fits, per dtype (0 recycles: memory does not grow with them):
   doubling from the longest length measured, then bisection to ``--resolution`` residues.

``--tiny`` uses a small model instead (a smoke test of this script; ``--device cpu`` runs it without a GPU, steps 3
to 5 then skipped).

Usage (from the repository root, on a GPU machine; esmfold_lite importable, e.g. ``PYTHONPATH=.``):
    python benchmarks/bench_gpu.py --out OUTDIR            # about 6 minutes on an H200 (estimated)
Writes OUTDIR/gpu.json (default benchmarks/results) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized transformers model the tests use
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_sequence(length: int) -> str:
    generator = torch.Generator().manual_seed(length)
    return "".join(AMINO_ACIDS[i] for i in torch.randint(0, 20, (length,), generator=generator).tolist())


class Bench:
    """The run's clock, budget, device and results (written to ``out`` after every step)."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, torch.device(args.device)
        self.started = time.perf_counter()
        self.results: dict = {
            "command": " ".join(["python", "benchmarks/bench_gpu.py", *sys.argv[1:]]),
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device),
            "torch": torch.__version__, "tiny": args.tiny, "steps": {}, "cases": [],
        }  # fmt: skip
        self.ca: dict[tuple[str, str, int], torch.Tensor | None] = {}  # (implementation, dtype, L) -> Cα positions

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def over_budget(self, what: str) -> bool:
        if self.elapsed() <= self.args.budget_s:
            return False
        print(f"skipped {what}: {self.elapsed():.0f} s of the {self.args.budget_s:.0f} s budget used", flush=True)
        self.results["steps"].setdefault("skipped", []).append(what)
        return True

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        self.args.out.mkdir(parents=True, exist_ok=True)
        name = "gpu_tiny.json" if self.args.tiny else "gpu.json"
        (self.args.out / name).write_text(json.dumps(self.results, indent=1))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, run, warm_up) -> dict:
        """Time ``run()`` after ``warm_up()``; peak GPU memory of the timed call; out of memory reported."""
        try:
            with torch.no_grad():
                warm_up()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(self.device)
                self.synchronize()
                start = time.perf_counter()
                value = run()
                self.synchronize()
                seconds = time.perf_counter() - start
        except torch.OutOfMemoryError as exc:
            return {"error": f"out of memory: {str(exc).splitlines()[0][:160]}", "out_of_memory": True}
        except Exception as exc:  # reported per case, the run goes on
            return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        return {"seconds": round(seconds, 3), "peak_gib": None if peak is None else round(peak, 2), "value": value}


def build_reference(bench: Bench, folder: Path) -> None:
    """A randomized transformers ESMFold, built on the device, saved to ``folder`` (its LM in fp16 on CUDA, as the
    released model); both implementations then load that folder."""
    from esmfold_reference import full_size_hf_esmfold, tiny_hf_esmfold

    start = time.perf_counter()
    if bench.args.tiny:
        model = tiny_hf_esmfold(num_blocks=2, sm_blocks=2, lm_layers=2, lm_dim=64, lm_heads=4, device=bench.device)
    else:
        model = full_size_hf_esmfold(device=bench.device)
    model.esm.to(lm_dtype(bench))
    built = time.perf_counter() - start
    model.save_pretrained(folder)
    bench.results["steps"]["model"] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": round(built, 1), "save_s": round(time.perf_counter() - start - built, 1),
    }  # fmt: skip


def load_reference(bench: Bench, folder: Path, dtype: torch.dtype):
    from transformers import EsmForProteinFolding

    model = EsmForProteinFolding.from_pretrained(folder).to(bench.device).eval()
    with torch.no_grad():  # the LM straight from the file's fp16 (not through another half type), the rest in dtype
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(lm_dtype(bench) if name.startswith("esm.") else dtype)
    model.trunk.set_chunk_size(None)
    return model


def lm_dtype(bench: Bench) -> torch.dtype:
    return torch.float16 if bench.device.type == "cuda" else torch.float32


def load_ours(bench: Bench, folder: Path, dtype: torch.dtype, **options):
    from esmfold_lite import load_model

    return load_model(folder, device=bench.device, dtype=dtype, lm_dtype=lm_dtype(bench), **options)


def fold_ours(bench: Bench, model, length: int, num_recycles: int | None) -> dict:
    """esmfold_lite's forward on one random sequence of ``length``; ``value``: Cα positions, float64 on the CPU."""
    from esmfold_lite.fold.auto_chunk import choose_chunk_plan
    from esmfold_lite.fold.chains import encode_batch

    dtype = next(model.trunk.parameters()).dtype
    plan = choose_chunk_plan(length, model.cfg.trunk, device=bench.device, dtype=dtype)

    def run(sequence: str):
        batch = encode_batch([sequence])
        inputs = (batch.aatype.to(bench.device), batch.mask.to(bench.device), batch.residue_index.to(bench.device))
        positions = model(*inputs, num_recycles=num_recycles, chunk_size=plan)["positions"][-1]
        return positions[..., 1, :].double().cpu()

    result = bench.measure(lambda: run(random_sequence(length)), lambda: run(random_sequence(24)))
    result["chunk"] = {"rows": plan.rows, "pair_blocks": plan.pair_blocks}
    return result


def fold_reference(bench: Bench, model, length: int, num_recycles: int | None) -> dict:
    from esmfold_lite.fold.chains import encode_batch

    def run(sequence: str):
        b = encode_batch([sequence])
        out = model(b.aatype.to(bench.device), attention_mask=b.mask.long().to(bench.device),
                    position_ids=b.residue_index.to(bench.device), num_recycles=num_recycles)  # fmt: skip
        return out.positions[-1][..., 1, :].double().cpu()

    return bench.measure(lambda: run(random_sequence(length)), lambda: run(random_sequence(24)))


def side_by_side(bench: Bench, folder: Path, lengths: list[int]) -> None:
    """Both implementations at ``lengths`` in every dtype; Cα positions kept in ``bench.ca`` for ``compare_to_fp32``."""
    args = bench.args
    for dtype_name in args.dtypes:
        if bench.over_budget(f"side by side in {dtype_name} at L = {lengths}"):
            break
        dtype = DTYPES[dtype_name]
        start = time.perf_counter()
        reference = load_reference(bench, folder, dtype)
        loaded = time.perf_counter()
        ours = load_ours(bench, folder, dtype)
        bench.results["steps"].setdefault("load_s", {})[dtype_name] = {
            "transformers": round(loaded - start, 1), "esmfold_lite": round(time.perf_counter() - loaded, 1)
        }
        for length in lengths:
            if bench.over_budget(f"L = {length} in {dtype_name}"):
                break
            theirs = fold_reference(bench, reference, length, args.num_recycles)
            mine = fold_ours(bench, ours, length, args.num_recycles)
            ca_theirs, ca_mine = theirs.pop("value", None), mine.pop("value", None)
            bench.ca["esmfold_lite", dtype_name, length] = ca_mine
            bench.ca["transformers", dtype_name, length] = ca_theirs
            if ca_mine is not None and ca_theirs is not None:
                mine["ca_vs_transformers_same_dtype"] = (ca_mine - ca_theirs).norm(dim=-1).max().item()
            for row, impl in ((theirs, "transformers"), (mine, "esmfold_lite")):
                row.update(impl=impl, length=length, dtype=dtype_name)
                bench.results["cases"].append(row)
                print(json.dumps(row), flush=True)
            bench.save()
        del reference, ours


def compare_to_fp32(bench: Bench) -> None:
    """Every dtype of esmfold_lite against transformers fp32 at the same length."""
    for row in bench.results["cases"]:
        ours, fp32 = (bench.ca.get((impl, dtype, row["length"])) for impl, dtype in
                      (("esmfold_lite", row["dtype"]), ("transformers", "float32")))  # fmt: skip
        if row["impl"] == "esmfold_lite" and ours is not None and fp32 is not None:
            row["ca_vs_transformers_fp32"] = (ours - fp32).norm(dim=-1).max().item()


def sdpa_kernels(bench: Bench, folder: Path) -> None:
    """Which of torch's fused attention kernels esmfold_lite's attention (pair-biased, masked) can run on: the fold
    at the first length in bf16 with SDPA restricted to one kernel at a time (an error: that kernel refused)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = load_ours(bench, folder, torch.bfloat16)
    kernels = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):  # fmt: skip
        with sdpa_kernel(backend):
            result = fold_ours(bench, model, bench.args.lengths[0], bench.args.num_recycles)
        result.pop("value", None)
        kernels[backend.name] = {k: v for k, v in result.items() if k in ("seconds", "peak_gib", "error")}
        print(json.dumps({"sdpa": backend.name, **kernels[backend.name]}), flush=True)
    bench.results["steps"]["sdpa_kernels"] = {"length": bench.args.lengths[0], "dtype": "bfloat16", **kernels}
    del model


def oom_recovery(bench: Bench, folder: Path) -> None:
    """predict_fasta in fp32, chunking off, with the process's GPU memory capped at ``--oom-cap-gib`` (a smaller
    card): the first attempt runs out of memory for real, and the pipeline lowers the chunk size until it fits."""
    from esmfold_lite.pipeline import predict_fasta

    args = bench.args
    total = torch.cuda.get_device_properties(bench.device).total_memory
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "long.fasta"
        fasta.write_text(f">long\n{random_sequence(args.oom_length)}\n")
        model = load_ours(bench, folder, torch.float32)
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.oom_cap_gib * 2**30 / total), bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        start = time.perf_counter()
        try:
            [result] = predict_fasta(fasta, Path(tmp) / "out", model=model, formats=("pdb",), num_recycles=0,
                                     chunk_size=None, progress=False)  # fmt: skip
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, bench.device)
        bench.results["steps"]["oom_recovery"] = {
            "length": args.oom_length, "cap_gib": args.oom_cap_gib, "status": result.status, "notes": result.notes,
            "error": result.error, "seconds": round(time.perf_counter() - start, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated(bench.device) / 2**30, 2),
        }  # fmt: skip
        del model


def cpu_offload(bench: Bench, folder: Path) -> None:
    model = load_ours(bench, folder, torch.bfloat16, lm_device="cpu")
    length = bench.args.lengths[0]
    result = fold_ours(bench, model, length, bench.args.num_recycles)
    result.pop("value", None)
    bench.results["steps"]["cpu_offload"] = {"length": length, "trunk": "bfloat16", "lm": "float16 on the CPU",
                                             **result}  # fmt: skip
    del model


def longest(bench: Bench, folder: Path) -> None:
    """Per dtype: doubling from the longest length measured until a run fails, then bisection."""
    args = bench.args
    for dtype_name in args.dtypes:
        model = load_ours(bench, folder, DTYPES[dtype_name])
        fit = max((c["length"] for c in bench.results["cases"] if c["impl"] == "esmfold_lite"
                   and c["dtype"] == dtype_name and "error" not in c), default=None)  # fmt: skip
        over, runs, length = None, [], (fit or 256) * 2
        while over is None and length <= args.max_length and not bench.over_budget(f"longest, {dtype_name}"):
            result = fold_ours(bench, model, length, 0)
            result.pop("value", None)
            runs.append({"length": length, **result})
            fit, over, length = (fit, length, length) if "error" in result else (length, None, length * 2)
        while fit and over and over - fit > args.resolution and not bench.over_budget(f"longest, {dtype_name}"):
            middle = (fit + over) // 2
            result = fold_ours(bench, model, middle, 0)
            result.pop("value", None)
            runs.append({"length": middle, **result})
            fit, over = (fit, middle) if "error" in result else (middle, over)
        bench.results.setdefault("longest", []).append(
            {"dtype": dtype_name, "longest_fitting": fit, "smallest_failing": over, "runs": runs}
        )
        bench.save()
        del model


def print_table(results: dict) -> None:
    print(f"\nDevice: {results['device']}, torch {results['torch']}; {results['elapsed_s']} s\n")
    print("| dtype | L | implementation | chunk plan | seconds | peak GiB | Cα vs transformers (same dtype / fp32) Å |")
    print("|---|---|---|---|---|---|---|")
    for case in results["cases"]:
        if "error" in case:
            cells = ["out of memory" if case.get("out_of_memory") else case["error"][:60], "—", "—"]
        else:
            peak = "—" if case["peak_gib"] is None else f"{case['peak_gib']:.1f}"
            same, fp32 = case.get("ca_vs_transformers_same_dtype"), case.get("ca_vs_transformers_fp32")
            ca = " / ".join("" if v is None else f"{v:.2g}" for v in (same, fp32)) if same is not None else ""
            cells = [f"{case['seconds']:.2f}", peak, ca]
        print(f"| {case['dtype']} | {case['length']} | {case['impl']} | {case.get('chunk', '')} | " + " | ".join(cells)
              + " |")  # fmt: skip
    for name in ("model", "load_s", "sdpa_kernels", "oom_recovery", "cpu_offload", "skipped"):
        if name in results["steps"]:
            print(f"{name}: {json.dumps(results['steps'][name])}")
    for entry in results.get("longest", []):
        print(f"longest L, esmfold_lite {entry['dtype']}: {entry['longest_fitting']} fits, "
              f"{entry['smallest_failing']} does not")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[384, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"], choices=sorted(DTYPES))
    parser.add_argument("--num-recycles", type=int, default=None, help="default: the model's (4 passes)")
    parser.add_argument("--oom-length", type=int, default=2048, help="step 4's sequence length")
    parser.add_argument("--oom-cap-gib", type=float, default=24.0, help="step 4's GPU memory cap (a 24 GB card)")
    parser.add_argument("--search-longest", action="store_true", help="step 6 (long: off by default)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=16384)
    parser.add_argument("--budget-s", type=float, default=420.0, help="no step starts after this many seconds")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", type=Path, default=None, help="where the model folder is written (a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tiny", action="store_true", help="a small model: smoke-test this script")
    args = parser.parse_args(argv)

    bench = Bench(args)
    workdir = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        folder = workdir / "esmfold"
        build_reference(bench, folder)
        bench.save()
        side_by_side(bench, folder, args.lengths[:1])  # the first length in every dtype before anything else
        if bench.device.type == "cuda":
            if not bench.over_budget("SDPA kernels"):
                sdpa_kernels(bench, folder)
                bench.save()
            if not bench.over_budget("out-of-memory recovery"):
                oom_recovery(bench, folder)
                bench.save()
            if not bench.over_budget("cpu offload"):
                cpu_offload(bench, folder)
                bench.save()
        side_by_side(bench, folder, args.lengths[1:])
        compare_to_fp32(bench)
        bench.save()
        if args.search_longest:
            longest(bench, folder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        bench.save()
    print_table(bench.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
