"""CPU benchmark: esmfold_lite against transformers' ``EsmForProteinFolding`` on identical randomized weights.

One run measures, each case in its own subprocess (so its peak RSS is its own):

1. end to end (LM → trunk → structure module → heads, ``num_recycles=0``) for L in ``--lengths``: wall time of the
   forward pass, the process's peak RSS, and the largest atom-coordinate difference between the two;
2. the longest L whose run stays within ``--budget-gib`` of peak RSS, per implementation (1-block model): the
   first probe is extrapolated from the end-to-end peaks (a + b·L²), then L moves in steps of ``--budget-step``
   until one run fits and the next does not — every number reported is measured;
3. one full-width trunk block (esmfold_lite) at ``--block-length`` residues: peak RSS and time.

Chunk sizes: both implementations get the same ``chunk_size`` per L, the one ``chunk_size="auto"`` picks on this
CPU (16384 // L rows, a power of two; unchunked when that covers L). transformers chunks only its triangle
attention with it (``model.trunk.set_chunk_size``); esmfold_lite every O(L²)/O(L³) step. Neither changes numbers.

The model: esmfold_v1's trunk widths (c_s=1024, c_z=128, head widths 32, 32 position bins), ``--blocks`` trunk
blocks, the structure module at esmfold_v1 size (8 blocks), a 6-layer × 320 ESM-2; every parameter randomized
(tests/esmfold_reference.py). It is saved once as a transformers folder and loaded by both sides.

Usage (from the repository root):  python benchmarks/bench_cpu.py  [--quick]
Results go to benchmarks/results/cpu.json, benchmarks/results/cpu.png and the results section of
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized transformers model the tests use
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
START, END = "<!-- cpu-results:start -->", "<!-- cpu-results:end -->"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


# ---- worker side: one case per process -------------------------------------------------------------------------


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _inputs(length: int):
    from esmfold_lite.fold.chains import encode_batch

    generator = torch.Generator().manual_seed(length)
    sequence = "".join(AMINO_ACIDS[i] for i in torch.randint(0, 20, (length,), generator=generator).tolist())
    return encode_batch([sequence])


def _forward(impl: str, model_dir: str, chunk: int | None):
    """(model, run(batch) -> final atom14 positions (B, L, 14, 3))."""
    if impl == "esmfold_lite":
        from esmfold_lite import load_model

        model = load_model(model_dir)

        def run(batch):
            out = model(batch.aatype, batch.mask, batch.residue_index, num_recycles=0, chunk_size=chunk)
            return out["positions"][-1]

    else:
        from transformers import EsmForProteinFolding

        model = EsmForProteinFolding.from_pretrained(model_dir).float().eval()
        model.trunk.set_chunk_size(chunk)

        def run(batch):
            out = model(
                batch.aatype, attention_mask=batch.mask.long(), position_ids=batch.residue_index, num_recycles=0
            )
            return out.positions[-1]

    return model, run


def worker(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.impl == "block":
        from esmfold_reference import randomize_

        from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock

        block = randomize_(TriangularSelfAttentionBlock(1024, 128, 32, 32), seed=0).eval()
        generator = torch.Generator().manual_seed(0)
        s = torch.randn(1, args.length, 1024, generator=generator)
        z = torch.randn(1, args.length, args.length, 128, generator=generator)
        mask = torch.ones(1, args.length)
        loaded = _current_rss()
        with torch.no_grad():
            start = time.perf_counter()
            block(s, z, mask, chunk_size=args.chunk)
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss(), "loaded_rss": loaded}))
        return

    _, run = _forward(args.impl, args.model_dir, args.chunk)
    with torch.no_grad():
        run(_inputs(16))  # warm-up: thread pools, first-call kernel selection
        loaded = _current_rss()
        batch = _inputs(args.length)
        start = time.perf_counter()
        positions = run(batch)
        seconds = time.perf_counter() - start
    if args.positions:
        torch.save(positions.float().cpu(), args.positions)
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss(), "loaded_rss": loaded}))


# ---- driver side -----------------------------------------------------------------------------------------------


def save_model(folder: Path, blocks: int) -> Path:
    """A randomized full-width transformers ESMFold with ``blocks`` trunk blocks, saved as a transformers folder."""
    from esmfold_reference import tiny_hf_esmfold

    model = tiny_hf_esmfold(
        num_blocks=blocks, sm_blocks=8, lm_layers=6, lm_dim=320, lm_heads=20, max_recycles=4, seed=0, full_width=True
    )
    path = folder / f"esmfold_{blocks}blocks"
    model.save_pretrained(path)
    return path


def run_case(impl: str, length: int, chunk: int | None, model_dir: Path | None, positions: Path | None = None) -> dict:
    command = [sys.executable, __file__, "worker", "--impl", impl, "--length", str(length)]
    command += ["--chunk", str(chunk)] if chunk is not None else []
    command += ["--model-dir", str(model_dir)] if model_dir is not None else []
    command += ["--positions", str(positions)] if positions is not None else []
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        result = {"error": (done.stderr.strip().splitlines() or ["killed"])[-1], "returncode": done.returncode}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(impl=impl, length=length, chunk=chunk, process_seconds=time.perf_counter() - start)
    print(json.dumps(result), flush=True)
    return result


def longest_fitting(impl: str, model_dir: Path, budget: int, guess: int, step: int) -> dict:
    """Measured runs from L = ``guess`` in steps of ``step`` (up while runs fit, down while they do not) until one
    L fits and L + step does not. Returns both Ls and every run."""
    runs, fit, over = [], None, None
    length = max(step, guess // step * step)
    while fit is None or over is None:
        result = run_case(impl, length, cpu_chunk(length), model_dir)
        runs.append(result)
        if "error" in result or result["peak_rss"] > budget:
            over = length if over is None else min(over, length)
            if fit is None:
                length -= step
        else:
            fit = length if fit is None else max(fit, length)
            if over is None:
                length += step
        if length < step:
            break
    return {"impl": impl, "longest_fitting": fit, "smallest_over": over, "runs": runs}


def extrapolated_length(rows: list[dict], budget: int) -> int:
    """L where the fit peak = a + b·L² through the two longest successful end-to-end runs reaches ``budget``."""
    (l1, p1), (l2, p2) = sorted((r["length"], r["peak_rss"]) for r in rows if "error" not in r)[-2:]
    b = (p2 - p1) / (l2**2 - l1**2)
    return int(((budget - (p1 - b * l1**2)) / b) ** 0.5)


def cpu_chunk(length: int) -> int | None:
    """The chunk size ``chunk_size="auto"`` picks for L on this CPU (memory permitting), used for both sides."""
    from esmfold_lite.fold.auto_chunk import choose_chunk_size
    from esmfold_lite.fold.config import TrunkConfig

    return choose_chunk_size(length, TrunkConfig())


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def write_report(results: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cpu.json").write_text(json.dumps(results, indent=1))

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for impl, marker in (("esmfold_lite", "o"), ("transformers", "s")):
        rows = [r for r in results["end_to_end"] if r["impl"] == impl and "error" not in r]
        lengths = [r["length"] for r in rows]
        ax_time.plot(lengths, [r["seconds"] for r in rows], marker=marker, label=impl)
        ax_mem.plot(lengths, [r["peak_rss"] / 2**30 for r in rows], marker=marker, label=impl)
    for ax, label in ((ax_time, "forward wall time (s)"), (ax_mem, "peak RSS (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_time.set_yscale("log")
    fig.suptitle(f"ESMFold, {args.blocks} full-width trunk blocks, CPU ({results['machine']['cpus']} cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "cpu.png", dpi=110)

    lines = [
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']['processor']}, {results['machine']['cpus']} CPU cores, "
        f"{results['machine']['ram_gib']} GiB RAM; torch {results['machine']['torch']}, "
        f"transformers {results['machine']['transformers']}; {results['date']}; "
        f"whole run {results['total_minutes']:.1f} min.",
        "",
        f"End to end (LM, {args.blocks} trunk blocks, structure module, heads), `num_recycles=0`, one sequence, "
        "no autograd; time of the forward pass, peak RSS of the whole process (Python, torch, weights included):",
        "",
        "| L | chunk_size | esmfold_lite s | transformers s | speed-up | esmfold_lite peak RSS GiB "
        "| transformers peak RSS GiB | RSS ratio | max coord diff Å |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["impl"], r["length"]): r for r in results["end_to_end"]}
    for length in args.lengths:
        ours, theirs = by_key.get(("esmfold_lite", length)), by_key.get(("transformers", length))
        diff = results["coordinate_diff"].get(str(length))

        def cell(r, key, fmt):
            return "—" if r is None or "error" in r else fmt(r[key])

        speed = rss = "—"
        if ours and theirs and "error" not in ours and "error" not in theirs:
            speed = f"{theirs['seconds'] / ours['seconds']:.2f}×"
            rss = f"{ours['peak_rss'] / theirs['peak_rss']:.2f}"
        lines.append(
            f"| {length} | {results['chunks'][str(length)]} | {cell(ours, 'seconds', lambda v: f'{v:.1f}')} | "
            f"{cell(theirs, 'seconds', lambda v: f'{v:.1f}')} | {speed} | {cell(ours, 'peak_rss', gib)} | "
            f"{cell(theirs, 'peak_rss', gib)} | {rss} | {'—' if diff is None else f'{diff:.1e}'} |"
        )
    lines += ["", "![CPU benchmark](results/cpu.png)", ""]
    budget = results.get("budget")
    if budget:
        lines += [
            f"Longest L within {args.budget_gib} GiB peak RSS (1 trunk block, same model otherwise; chunk_size as "
            "above for each L; first probe extrapolated from the end-to-end peaks, then measured runs "
            f"{args.budget_step} residues apart):",
            "",
            "| implementation | longest L that fit | smallest L over budget | extrapolated first guess "
            "| runs (L: peak GiB) |",
            "|---|---|---|---|---|",
        ]
        for entry in budget:
            runs = ", ".join(f"{r['length']}: {'error' if 'error' in r else gib(r['peak_rss'])}" for r in entry["runs"])
            lines.append(
                f"| {entry['impl']} | {entry['longest_fitting']} | {entry['smallest_over']} | {entry['guess']} "
                f"| {runs} |"
            )
        lines.append("")
    block = results.get("block")
    if block:
        lines.append(
            f"One full-width trunk block (c_s=1024, c_z=128, 32 sequence heads, 4 pair heads) at L={block['length']}, "
            f"chunk_size={block['chunk']}, no autograd: peak RSS {gib(block['peak_rss'])} GiB (inputs s, z and the "
            f"block's weights alone: {gib(block['loaded_rss'])} GiB), {block['seconds']:.0f} s."
        )
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    work = sub.add_parser("worker", help="internal: run one case and print JSON")
    work.add_argument("--impl", choices=["esmfold_lite", "transformers", "block"], required=True)
    work.add_argument("--length", type=int, required=True)
    work.add_argument("--chunk", type=int, default=None)
    work.add_argument("--model-dir")
    work.add_argument("--positions")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--budget-step", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=2000)
    parser.add_argument("--block-chunk", type=int, default=None, help="default: the auto pick for --block-length")
    parser.add_argument("--skip", nargs="*", default=[], choices=["end_to_end", "budget", "block"])
    parser.add_argument("--quick", action="store_true", help="lengths 64 128, no budget search, block at L=256")
    args = parser.parse_args(argv)
    if args.mode == "worker":
        worker(args)
        return 0
    if args.quick:
        args.lengths, args.budget_gib, args.block_length = [64, 128, 192], 1.0, 256

    import transformers

    began = time.perf_counter()
    results: dict = {
        "command": " ".join(["python", "benchmarks/bench_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "ram_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "end_to_end": [],
        "coordinate_diff": {},
        "chunks": {str(length): cpu_chunk(length) for length in args.lengths},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "end_to_end" not in args.skip:
            model_dir = save_model(tmp, args.blocks)
            for length in args.lengths:
                pos = {}
                for impl in ("esmfold_lite", "transformers"):
                    pos[impl] = tmp / f"{impl}_{length}.pt"
                    results["end_to_end"].append(run_case(impl, length, cpu_chunk(length), model_dir, pos[impl]))
                if all(p.exists() for p in pos.values()):
                    ours, theirs = (torch.load(p) for p in pos.values())
                    results["coordinate_diff"][str(length)] = (ours - theirs).abs().max().item()
        if "budget" not in args.skip:
            one_block = save_model(tmp, 1)
            budget = int(args.budget_gib * 2**30)
            results["budget"] = []
            for impl in ("esmfold_lite", "transformers"):
                rows = [r for r in results["end_to_end"] if r["impl"] == impl]
                guess = extrapolated_length(rows, budget)
                entry = longest_fitting(impl, one_block, budget, guess, args.budget_step)
                results["budget"].append({**entry, "guess": guess})
        if "block" not in args.skip:
            chunk = args.block_chunk or cpu_chunk(args.block_length)
            results["block"] = run_case("block", args.block_length, chunk, None)
    results["total_minutes"] = (time.perf_counter() - began) / 60
    write_report(results, args)
    print(f"done in {results['total_minutes']:.1f} min; wrote {README} and {RESULTS}/cpu.json, cpu.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
