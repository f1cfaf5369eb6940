"""GPU benchmark: full-size ESMFold (ESM-2 3B + 48 trunk blocks + 8 structure blocks) with randomized weights,
esmfold_lite against transformers' ``EsmForProteinFolding``. Not run yet: no GPU was available when it was written.

For each L in ``--lengths`` and each trunk dtype in ``--dtypes`` (the language model in fp16 and the structure
module's geometry in fp32, as in the original), each case in its own subprocess:

* end-to-end time of ``forward`` (``--num-recycles``; default: the model's 4 passes), after a warm-up call;
* peak GPU memory (``torch.cuda.max_memory_allocated``) of that call;
* the largest Cα distance between the two implementations (same dtype);

then, per implementation and dtype, the longest L that fits in the GPU (``--search-longest``): doubling from the
last length that fitted until a run fails with out-of-memory, then bisection to ``--resolution`` residues.
esmfold_lite runs with ``chunk_size="auto"`` (its plan is reported), transformers with ``--reference-chunk`` for its
triangle attention. ``--compile`` wraps esmfold_lite's trunk blocks in ``torch.compile`` (kept only if faster).

The randomized model is built once on the CPU (about 12 GB of RAM, a few minutes) and saved as a transformers folder
that both sides load. ``--tiny`` uses a small model instead (a smoke test of this script, also on the CPU).

Usage (from the repository root, on a GPU machine):
    python benchmarks/bench_gpu.py --lengths 384 1024 --dtypes bfloat16 float16 float32 --search-longest
Writes benchmarks/results/gpu.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized transformers model the tests use
RESULTS = ROOT / "benchmarks" / "results"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(folder: Path, tiny: bool) -> Path:
    from esmfold_reference import full_size_hf_esmfold, tiny_hf_esmfold

    if tiny:
        model = tiny_hf_esmfold(num_blocks=2, sm_blocks=2, lm_layers=2, lm_dim=64, lm_heads=4, max_recycles=4)
    else:
        model = full_size_hf_esmfold()
    path = folder / "esmfold"
    model.save_pretrained(path)
    return path


def worker(args: argparse.Namespace) -> dict:
    from esmfold_lite.fold.chains import encode_batch

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    generator = torch.Generator().manual_seed(args.length)
    sequence = "".join(AMINO_ACIDS[i] for i in torch.randint(0, 20, (args.length,), generator=generator).tolist())
    warm, batch = encode_batch(["MKTAYIAKQRQISFVKSHFSRQ"]), encode_batch([sequence])
    lm_dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.impl == "esmfold_lite":
        from esmfold_lite import load_model
        from esmfold_lite.fold.auto_chunk import choose_chunk_plan

        model = load_model(args.model_dir, device=device, dtype=dtype, lm_dtype=lm_dtype)
        if args.compile:
            for block in model.trunk.blocks:
                block.forward = torch.compile(block.forward, dynamic=True)
        plan = choose_chunk_plan(args.length, model.cfg.trunk, device=device, dtype=dtype)
        chosen = {"rows": plan.rows, "pair_blocks": plan.pair_blocks}

        def run(b, plan=plan):
            inputs = (b.aatype.to(device), b.mask.to(device), b.residue_index.to(device))
            return model(*inputs, num_recycles=args.num_recycles, chunk_size=plan)["positions"][-1]

    else:
        from transformers import EsmForProteinFolding

        model = EsmForProteinFolding.from_pretrained(args.model_dir).to(device, dtype).eval()
        model.esm.to(lm_dtype)
        model.trunk.set_chunk_size(args.reference_chunk)
        chosen = args.reference_chunk

        def run(b):
            out = model(b.aatype.to(device), attention_mask=b.mask.long().to(device),
                        position_ids=b.residue_index.to(device), num_recycles=args.num_recycles)  # fmt: skip
            return out.positions[-1]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        run(warm)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize()
        start = time.perf_counter()
        positions = run(batch)
        synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if args.positions:
        torch.save(positions.double().cpu(), args.positions)
    return {"seconds": seconds, "peak_bytes": peak, "chunk": chosen}


def run_case(args: argparse.Namespace, impl: str, length: int, dtype: str, model_dir: Path, positions=None) -> dict:
    command = [sys.executable, __file__, "worker", "--impl", impl, "--length", str(length), "--dtype", dtype,
               "--model-dir", str(model_dir), "--device", args.device]  # fmt: skip
    command += ["--num-recycles", str(args.num_recycles)] if args.num_recycles is not None else []
    command += ["--reference-chunk", str(args.reference_chunk)] if args.reference_chunk else []
    command += ["--compile"] if args.compile else []
    command += ["--positions", str(positions)] if positions else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["killed"]
        oom = any("out of memory" in line.lower() for line in lines)
        result = {"error": lines[-1], "out_of_memory": oom}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(impl=impl, length=length, dtype=dtype)
    print(json.dumps(result), flush=True)
    return result


def longest(args: argparse.Namespace, impl: str, dtype: str, model_dir: Path, start: int) -> dict:
    """Doubling from ``start`` until a run fails, then bisection to ``args.resolution``."""
    runs, fit, over = [], None, None
    length = start
    while over is None and length <= args.max_length:
        result = run_case(args, impl, length, dtype, model_dir)
        runs.append(result)
        if "error" in result:
            over = length
        else:
            fit, length = length, length * 2
    while fit is not None and over is not None and over - fit > args.resolution:
        middle = (fit + over) // 2
        result = run_case(args, impl, middle, dtype, model_dir)
        runs.append(result)
        fit, over = (fit, middle) if "error" in result else (middle, over)
    return {"impl": impl, "dtype": dtype, "longest_fitting": fit, "smallest_failing": over, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="driver", choices=["driver", "worker"])
    parser.add_argument("--impl", choices=["esmfold_lite", "transformers"])
    parser.add_argument("--length", type=int)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--model-dir")
    parser.add_argument("--positions")
    parser.add_argument("--lengths", type=int, nargs="+", default=[384, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"], choices=sorted(DTYPES))
    parser.add_argument("--num-recycles", type=int, default=None)
    parser.add_argument("--reference-chunk", type=int, default=None, help="transformers' triangle-attention chunk")
    parser.add_argument("--compile", action="store_true", help="torch.compile esmfold_lite's trunk blocks")
    parser.add_argument("--search-longest", action="store_true")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=16384)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small model: smoke-test this script")
    args = parser.parse_args(argv)
    if args.mode == "worker":
        print(json.dumps(worker(args)))
        return 0

    results: dict = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else args.device,
                     "torch": torch.__version__, "cases": [], "longest": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_model(tmp, args.tiny)
        for dtype in args.dtypes:
            for length in args.lengths:
                pos = {impl: tmp / f"{impl}_{dtype}_{length}.pt" for impl in ("esmfold_lite", "transformers")}
                cases = [run_case(args, impl, length, dtype, model_dir, pos[impl]) for impl in pos]
                if all(p.exists() for p in pos.values()):
                    ours, theirs = (torch.load(p)[..., 1, :] for p in pos.values())
                    cases[0]["ca_deviation"] = (ours - theirs).norm(dim=-1).max().item()
                results["cases"] += cases
            if args.search_longest:
                for impl in ("esmfold_lite", "transformers"):
                    fitted = [c["length"] for c in results["cases"]
                              if c["impl"] == impl and c["dtype"] == dtype and "error" not in c]  # fmt: skip
                    results["longest"].append(longest(args, impl, dtype, model_dir, max(fitted, default=256)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("gpu_tiny.json" if args.tiny else "gpu.json")).write_text(json.dumps(results, indent=1))

    print(f"\nGPU: {results['gpu']}, torch {results['torch']}\n")
    print("| dtype | L | implementation | plan / chunk | seconds | peak GiB | Cα vs transformers Å |")
    print("|---|---|---|---|---|---|---|")
    for case in results["cases"]:
        if "error" in case:
            row = ["out of memory" if case.get("out_of_memory") else case["error"][:60], "—", "—"]
        else:
            peak = "—" if case["peak_bytes"] is None else f"{case['peak_bytes'] / 2**30:.1f}"
            row = [f"{case['seconds']:.1f}", peak, f"{case['ca_deviation']:.1e}" if "ca_deviation" in case else ""]
        print(
            f"| {case['dtype']} | {case['length']} | {case['impl']} | {case.get('chunk')} | " + " | ".join(row) + " |"
        )
    for entry in results["longest"]:
        print(f"longest L, {entry['impl']} {entry['dtype']}: {entry['longest_fitting']} fits, "
              f"{entry['smallest_failing']} does not")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
