"""CPU benchmark: esmfold_lite against transformers' ``EsmForProteinFolding`` on identical randomized weights.

One run measures, each case in its own subprocess (so its peak RSS is its own):

1. end to end (LM → trunk → structure module → heads, ``num_recycles=0``) for L in ``--lengths``: wall time of the
   forward pass, the process's peak RSS, the largest Cα deviation between the two, and the noise floor next to it:
   the largest Cα deviation of transformers from itself when its trunk input (the output of ``esm_s_mlp``) moves by
   one ulp. transformers runs only up to ``--reference-max-length`` (beyond, its extrapolated peak is reported);
2. the longest L whose run stays within ``--budget-gib`` of peak RSS, per implementation (1-block model, chunking
   on: the chunk size ``cpu_chunk`` for both; for esmfold_lite an integer chunk is its leanest plan): the first
   probe is extrapolated from the end-to-end peaks (a + b·L²), then L moves in steps of ``--budget-step`` until one
   run fits and the next does not — every number reported is measured;
3. one full-width trunk block (esmfold_lite) at ``--block-length`` residues with the leanest plan: peak RSS and
   time.

Chunking: esmfold_lite runs with ``chunk_size="auto"`` (the fastest plan for the free memory, chosen in the worker
and reported), from ``--lean-from`` on with its leanest plan (an integer chunk); transformers gets ``cpu_chunk(L)``
rows (16384 // L, a power of two), which it uses for its triangle attention only (``model.trunk.set_chunk_size``).
Neither changes the numbers.

The model: esmfold_v1's trunk widths (c_s=1024, c_z=128, head widths 32, 32 position bins), ``--blocks`` trunk
blocks, the structure module at esmfold_v1 size (8 blocks), a 6-layer × 320 ESM-2; every parameter randomized
(tests/esmfold_reference.py). It is saved once as a transformers folder and loaded by both sides.

Usage (from the repository root):  python benchmarks/bench_cpu.py  [--quick]
Results go to benchmarks/results/cpu.json, benchmarks/results/cpu.png and the results section of
benchmarks/README.md. ``benchmarks/bench_precision.py`` uses the same worker for the recycling and fp64 comparison.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from readme_section import README, write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized transformers model the tests use
RESULTS = ROOT / "benchmarks" / "results"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


# ---- worker side: one case per process -------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    """A size field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; 0 where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: ``VmHWM``, not ``ru_maxrss``, which on Linux also counts
    the parent's RSS at the fork that started this process."""
    return _status_bytes("VmHWM")


def _current_rss() -> int:
    return _status_bytes("VmRSS")


def _inputs(length: int):
    from esmfold_lite.fold.chains import encode_batch

    generator = torch.Generator().manual_seed(length)
    sequence = "".join(AMINO_ACIDS[i] for i in torch.randint(0, 20, (length,), generator=generator).tolist())
    return encode_batch([sequence])


def _forward(args: argparse.Namespace):
    """(run(batch) -> final atom14 positions (B, L, 14, 3), the chunk plan or size used)."""
    dtype = torch.float64 if args.float64 else torch.float32
    if args.impl == "esmfold_lite":
        from esmfold_lite import load_model
        from esmfold_lite.fold.auto_chunk import choose_chunk_plan
        from esmfold_lite.fold.chunking import ChunkPlan

        model = load_model(args.model_dir, dtype=dtype, lm_dtype=dtype)
        plan = (
            choose_chunk_plan(args.length, model.cfg.trunk, dtype=dtype)
            if args.chunk == "auto"
            else ChunkPlan.of(None if args.chunk is None else int(args.chunk), args.length)
        )
        chosen = {"rows": plan.rows, "pair_blocks": plan.pair_blocks}

        def run(batch, plan=plan):
            out = model(batch.aatype, batch.mask, batch.residue_index, num_recycles=args.num_recycles, chunk_size=plan)
            return out["positions"][-1]

    else:
        from transformers import EsmForProteinFolding

        model = EsmForProteinFolding.from_pretrained(args.model_dir).to(dtype).eval()
        chosen = None if args.chunk in (None, "auto") else int(args.chunk)
        model.trunk.set_chunk_size(chosen)

        def run(batch):
            out = model(
                batch.aatype,
                attention_mask=batch.mask.long(),
                position_ids=batch.residue_index,
                num_recycles=args.num_recycles,
            )
            return out.positions[-1]

    if args.perturb_ulp:  # the trunk's sequence input, one ulp up: the noise floor of the comparison
        model.esm_s_mlp.register_forward_hook(lambda m, i, out: torch.nextafter(out, torch.full_like(out, torch.inf)))
    return run, chosen


def worker(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.impl == "block":
        from esmfold_reference import randomize_

        from esmfold_lite.fold.chunking import ChunkPlan, reuse_buffers
        from esmfold_lite.fold.host_heap import kept_heap
        from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock

        plan = ChunkPlan.of(int(args.chunk), args.length)
        block = randomize_(TriangularSelfAttentionBlock(1024, 128, 32, 32), seed=0).eval()
        generator = torch.Generator().manual_seed(0)
        s = torch.randn(1, args.length, 1024, generator=generator)
        z = torch.randn(1, args.length, args.length, 128, generator=generator)
        mask = torch.ones(1, args.length)
        loaded = _current_rss()
        with torch.no_grad(), reuse_buffers(), kept_heap("cpu"):  # as ESMFold.forward runs its blocks
            start = time.perf_counter()
            block(s, z, mask, plan.rows, plan.pair_blocks)
            seconds = time.perf_counter() - start
        result = {"seconds": seconds, "peak_rss": _peak_rss(), "loaded_rss": loaded, "pair_bytes": z.nbytes,
                  "plan": {"rows": plan.rows, "pair_blocks": plan.pair_blocks}}  # fmt: skip
        print(json.dumps(result))
        return

    run, chosen = _forward(args)
    with torch.no_grad():
        run(_inputs(16))  # warm-up: thread pools, first-call kernel selection
        loaded = _current_rss()
        batch = _inputs(args.length)
        start = time.perf_counter()
        positions = run(batch)
        seconds = time.perf_counter() - start
    if args.positions:
        torch.save(positions.double().cpu(), args.positions)
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss(), "loaded_rss": loaded, "chunk": chosen}))


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


def run_case(
    impl: str,
    length: int,
    chunk: int | str | None,
    model_dir: Path | None,
    positions: Path | None = None,
    **options,
) -> dict:
    """One worker subprocess; ``options``: num_recycles, perturb_ulp, float64, threads (passed to the worker), and
    blocks (the model's trunk depth, recorded with the result)."""
    command = [sys.executable, __file__, "worker", "--impl", impl, "--length", str(length)]
    command += ["--chunk", str(chunk)] if chunk is not None else []
    command += ["--model-dir", str(model_dir)] if model_dir is not None else []
    command += ["--positions", str(positions)] if positions is not None else []
    if options.get("num_recycles") is not None:
        command += ["--num-recycles", str(options["num_recycles"])]
    command += ["--perturb-ulp"] if options.get("perturb_ulp") else []
    command += ["--float64"] if options.get("float64") else []
    command += ["--threads", str(options["threads"])] if options.get("threads") else []
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        result = {"error": (done.stderr.strip().splitlines() or ["killed"])[-1], "returncode": done.returncode}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(impl=impl, length=length, process_seconds=time.perf_counter() - start, **options)
    result.setdefault("chunk", chunk)
    print(json.dumps(result), flush=True)
    return result


def ca_deviation(a: Path, b: Path) -> float | None:
    """The largest Cα distance (Å) between two saved atom14 positions (B, L, 14, 3); None if one is missing."""
    if not (a.exists() and b.exists()):
        return None
    ca_a, ca_b = torch.load(a)[..., 1, :], torch.load(b)[..., 1, :]
    return (ca_a - ca_b).norm(dim=-1).max().item()


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


def _peak_fit(rows: list[dict]) -> tuple[float, float]:
    """(a, b) of peak = a + b·L² through the runs at the two longest lengths (plain runs, not the +1 ulp ones)."""
    peaks = {r["length"]: r["peak_rss"] for r in rows if "error" not in r and not r.get("perturb_ulp")}
    (l1, p1), (l2, p2) = sorted(peaks.items())[-2:]
    b = (p2 - p1) / (l2**2 - l1**2)
    return p1 - b * l1**2, b


def extrapolated_length(rows: list[dict], budget: int) -> int:
    """L where the fit peak = a + b·L² through the two longest successful end-to-end runs reaches ``budget``."""
    a, b = _peak_fit(rows)
    return int(((budget - a) / b) ** 0.5)


def extrapolated_peak(rows: list[dict], length: int) -> float:
    a, b = _peak_fit(rows)
    return a + b * length**2


def cpu_chunk(length: int) -> int | None:
    """Rows per chunk that ``chunk_size="auto"`` uses on this CPU with memory to spare (16384 // L, a power of two;
    None when that covers L): transformers' triangle-attention chunk, and the budget search's chunk for both."""
    from esmfold_lite.fold.auto_chunk import choose_chunk_plan
    from esmfold_lite.fold.config import TrunkConfig

    return choose_chunk_plan(length, TrunkConfig(), available=2**50).rows


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def plan_text(chunk) -> str:
    """A chunk plan as "rows × pair blocks" (whole rows: "all"), or transformers' chunk size."""
    if isinstance(chunk, dict):
        return f"{chunk['rows'] or 'all'} × {chunk['pair_blocks']}"
    return "none" if chunk is None else str(chunk)


def write_report(results: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cpu.json").write_text(json.dumps(results, indent=1))
    main_rows = [r for r in results["end_to_end"] if not r.get("perturb_ulp")]

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for impl, marker in (("esmfold_lite", "o"), ("transformers", "s")):
        rows = [r for r in main_rows if r["impl"] == impl and "error" not in r]
        lengths = [r["length"] for r in rows]
        ax_time.plot(lengths, [r["seconds"] for r in rows], marker=marker, label=impl)
        ax_mem.plot(lengths, [r["peak_rss"] / 2**30 for r in rows], marker=marker, label=impl)
    lengths = sorted({r["length"] for r in main_rows})
    pair = [(n, n * n * 128 * 4 / 2**30) for n in lengths]
    ax_mem.plot([n for n, _ in pair], [p for _, p in pair], ls=":", color="grey", label="one pair tensor (fp32)")
    for ax, label in ((ax_time, "forward wall time (s)"), (ax_mem, "peak RSS (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_time.set_yscale("log")
    ax_mem.set_yscale("log")
    depths = "/".join(str(n) for n in sorted({r["blocks"] for r in main_rows}))
    fig.suptitle(f"ESMFold, {depths} full-width trunk blocks, CPU ({results['machine']['cpus']} cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "cpu.png", dpi=110)

    lines = [
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine'].get('model', results['machine']['processor'])}, "
        f"{results['machine']['cpus']} CPU cores, "
        f"{results['machine']['ram_gib']} GiB RAM; torch {results['machine']['torch']}, "
        f"transformers {results['machine']['transformers']}; {results['date']}; "
        f"whole run {results['total_minutes']:.1f} min; load average at the start {results['machine']['load']}.",
        "",
        "End to end (LM, the trunk blocks of the table, structure module, heads), `num_recycles=0`, one sequence, "
        "no autograd; time of the forward pass, peak RSS of the whole process (Python, torch, weights included); "
        "Cα: the largest Cα distance between the two; noise floor: the largest Cα distance of transformers from "
        "itself with its trunk input one ulp up:",
        "",
        "| L | trunk blocks | esmfold_lite plan (rows × pair blocks) | transformers chunk | esmfold_lite s "
        "| transformers s "
        "| speed-up | esmfold_lite peak GiB | transformers peak GiB | RSS ratio | pair tensor GiB | Cα Å "
        "| noise floor Å |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["impl"], r["length"]): r for r in main_rows}
    for length in lengths:
        ours, theirs = by_key.get(("esmfold_lite", length)), by_key.get(("transformers", length))

        def cell(r, key, fmt):
            return "—" if r is None or "error" in r else fmt(r[key])

        speed = rss = "—"
        if ours and theirs and "error" not in ours and "error" not in theirs:
            speed = f"{theirs['seconds'] / ours['seconds']:.2f}×"
            rss = f"{ours['peak_rss'] / theirs['peak_rss']:.2f}"
        peak_theirs = cell(theirs, "peak_rss", gib)
        reference = [r for r in main_rows if r["impl"] == "transformers" and "error" not in r]
        if theirs is None and len({r["length"] for r in reference}) >= 2:
            peak_theirs = f"not run (≈{gib(extrapolated_peak(reference, length))} extrapolated)"
        ca, floor = results["ca_deviation"].get(str(length)), results["noise_floor"].get(str(length))
        lines.append(
            f"| {length} | {(ours or theirs)['blocks']} | {cell(ours, 'chunk', plan_text)} "
            f"| {cell(theirs, 'chunk', plan_text)} "
            f"| {cell(ours, 'seconds', lambda v: f'{v:.1f}')} | {cell(theirs, 'seconds', lambda v: f'{v:.1f}')} "
            f"| {speed} | {cell(ours, 'peak_rss', gib)} | {peak_theirs} | {rss} | {gib(length * length * 512)} "
            f"| {'—' if ca is None else f'{ca:.1e}'} | {'—' if floor is None else f'{floor:.1e}'} |"
        )
    here = results["machine"].get("model")
    elsewhere = sorted({(r["length"], r.get("cpu", "an unrecorded CPU")) for r in main_rows if r.get("cpu") != here})
    if elsewhere:
        lines += ["", "Measured on another machine: " + "; ".join(f"L={n} on {cpu}" for n, cpu in elsewhere) + "."]
    lines += ["", "![CPU benchmark](results/cpu.png)", ""]
    budget = results.get("budget")
    if budget:
        lines += [
            f"Longest L within {args.budget_gib} GiB peak RSS (on {budget[0].get('cpu', 'an unrecorded CPU')}; "
            "1 trunk block, same model otherwise; chunk size `cpu_chunk(L)` for both, for esmfold_lite its leanest "
            "plan; first probe extrapolated from the end-to-end peaks, then measured runs "
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
    if block and "error" not in block:
        lines.append(
            f"One full-width trunk block (c_s=1024, c_z=128, 32 sequence heads, 4 pair heads) at L={block['length']}, "
            f"plan {plan_text(block['plan'])} (rows × pair blocks), no autograd: peak RSS {gib(block['peak_rss'])} GiB "
            f"for a {gib(block['pair_bytes'])} GiB pair tensor; the process with its inputs and weights took "
            f"{gib(block['loaded_rss'])} GiB before the call, so the block's pair memory peaked at "
            f"{(block['peak_rss'] - block['loaded_rss'] + block['pair_bytes']) / block['pair_bytes']:.2f}× the pair "
            f"tensor (z itself included); {block['seconds']:.0f} s"
        )
        if block.get("cpu") != here:
            lines[-1] += f" (on {block.get('cpu', 'an unrecorded CPU')})"
        lines[-1] += "."
    elif block:
        lines.append(f"One full-width trunk block at L={block['length']}: failed ({block['error']}).")
    write_section("cpu", lines)


def merged(old: dict, new: dict) -> dict:
    """``new`` with the cases of ``old`` that it did not run again; commands and minutes of both parts kept."""

    def key(case: dict) -> tuple:
        return case["impl"], case["length"], bool(case.get("perturb_ulp"))

    rerun = {key(case) for case in new["end_to_end"]}
    out = dict(new)
    out["end_to_end"] = [c for c in old["end_to_end"] if key(c) not in rerun] + new["end_to_end"]
    for name in ("ca_deviation", "noise_floor"):
        out[name] = {**old.get(name, {}), **new.get(name, {})}
    for name in ("budget", "block"):
        if name not in new and name in old:
            out[name] = old[name]
    out["command"] = f"{old['command']}` + `{new['command']}"
    out["total_minutes"] = old["total_minutes"] + new["total_minutes"]
    return out


def add_worker_arguments(work: argparse.ArgumentParser) -> None:
    work.add_argument("--impl", choices=["esmfold_lite", "transformers", "block"], required=True)
    work.add_argument("--length", type=int, required=True)
    work.add_argument("--chunk", default=None, help='rows per chunk, or "auto" (esmfold_lite)')
    work.add_argument("--model-dir")
    work.add_argument("--positions")
    work.add_argument("--num-recycles", type=int, default=0)
    work.add_argument("--perturb-ulp", action="store_true")
    work.add_argument("--float64", action="store_true")
    work.add_argument("--threads", type=int, default=None)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor where that is unavailable."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import transformers

    return {
        "processor": platform.processor() or platform.machine(),
        "model": cpu_model(),
        "cpus": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    add_worker_arguments(sub.add_parser("worker", help="internal: run one case and print JSON"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2000, 4000])
    parser.add_argument("--reference-max-length", type=int, default=1024, help="longest L transformers runs at")
    parser.add_argument(
        "--lean-from",
        type=int,
        default=4000,
        help='from this L on, esmfold_lite gets chunk_size=cpu_chunk(L) (its leanest plan) instead of "auto", so a '
        "run on a shared machine stays near 1.5x the pair tensor whatever happens to be free",
    )
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--budget-step", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=4000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["end_to_end", "budget", "block"])
    parser.add_argument("--quick", action="store_true", help="lengths 64 128 192, no budget search, block at L=256")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add this run's cases to benchmarks/results/cpu.json (replacing the same cases) instead of starting "
        "afresh, so the benchmark can be run in parts",
    )
    args = parser.parse_args(argv)
    if args.mode == "worker":
        worker(args)
        return 0
    if args.quick:
        args.lengths, args.budget_gib, args.block_length, args.skip = [64, 128, 192], 1.0, 256, ["budget"]

    began = time.perf_counter()
    results: dict = {
        "command": " ".join(["python", "benchmarks/bench_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "end_to_end": [],
        "ca_deviation": {},
        "noise_floor": {},
    }
    earlier = json.loads((RESULTS / "cpu.json").read_text()) if args.merge and (RESULTS / "cpu.json").exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "end_to_end" not in args.skip:
            model_dir = save_model(tmp, args.blocks)
            for length in args.lengths:
                pos = {name: tmp / f"{name}_{length}.pt" for name in ("esmfold_lite", "transformers", "ulp")}
                lite_chunk = "auto" if length < args.lean_from else cpu_chunk(length)
                results["end_to_end"].append(
                    run_case("esmfold_lite", length, lite_chunk, model_dir, pos["esmfold_lite"], blocks=args.blocks)
                )
                if length <= args.reference_max_length:
                    chunk = cpu_chunk(length)
                    results["end_to_end"].append(
                        run_case("transformers", length, chunk, model_dir, pos["transformers"], blocks=args.blocks)
                    )
                    results["end_to_end"].append(
                        run_case(
                            "transformers", length, chunk, model_dir, pos["ulp"], perturb_ulp=True, blocks=args.blocks
                        )
                    )
                for key, other in (("ca_deviation", "esmfold_lite"), ("noise_floor", "ulp")):
                    deviation = ca_deviation(pos["transformers"], pos[other])
                    if deviation is not None:
                        results[key][str(length)] = deviation
        if "budget" not in args.skip:
            one_block = save_model(tmp, 1)
            budget = int(args.budget_gib * 2**30)
            results["budget"] = []
            for impl in ("esmfold_lite", "transformers"):
                rows = [r for r in earlier.get("end_to_end", []) + results["end_to_end"] if r["impl"] == impl]
                guess = extrapolated_length(rows, budget)
                entry = longest_fitting(impl, one_block, budget, guess, args.budget_step)
                results["budget"].append({**entry, "guess": guess})
        if "block" not in args.skip:
            results["block"] = run_case("block", args.block_length, 4, None)  # 4 rows: the leanest plan
    results["total_minutes"] = (time.perf_counter() - began) / 60
    here = results["machine"]["model"]
    for case in [*results["end_to_end"], *results.get("budget", []), results.get("block") or {}]:
        case.setdefault("cpu", here)  # merged runs may come from different machines: each case names its own
    if earlier:
        results = merged(earlier, results)
    write_report(results, args)
    print(f"done in {results['total_minutes']:.1f} min; wrote {README} and {RESULTS}/cpu.json, cpu.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
