"""Trunk arithmetic rate: analytic FLOPs of every step of one full-width trunk block against ``torch.mm``.

One run measures, in the same process and thread setting:

1. the sustained rate of ``torch.mm`` (square fp32 matrices of ``--mm-size``, repeated for about ``--mm-seconds``;
   measured before and after the block, the mean is the reference);
2. one esmfold_v1-width trunk block (c_s=1024, c_z=128, 32 sequence heads, 4 pair heads, randomized weights) at
   ``--length`` residues, no autograd, with the plan ``chunk_size="auto"`` picks (or ``--rows``/``--pair-blocks``):
   the wall time of each step, timed by forward hooks, after a warm-up call.

FLOPs are counted analytically, 2 per multiply-add of the step's matrix products (projections, the triangle
product, attention's q·kᵀ and a·v); elementwise work (LayerNorm, softmax, gates) is not counted, so a step's rate
is the fraction of the machine's matmul rate it turns into useful arithmetic. Work that the lean plan recomputes
is not counted either.

Usage (from the repository root):  python benchmarks/bench_trunk_flops.py [--length 512] [--threads N]
Writes benchmarks/results/trunk_flops.json and the ``flops-results`` section of benchmarks/README.md.

Two source trees side by side (e.g. before and after a refactoring):
``python benchmarks/bench_trunk_flops.py --compare BEFORE AFTER [--runs 7] [--length 512]`` times the block
``--runs`` times per tree, each run in a fresh subprocess that imports esmfold_lite from that tree (``--tree``), in
the order A B B A A B B A ... so that a drift of the machine's speed falls on both alike; prints the median and
spread of each and writes benchmarks/results/trunk_compare_L{length}.json (not the README). ``--tree PATH`` alone
times one tree and prints its JSON (nothing written).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from readme_section import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # randomize_: every parameter randomized, as in the parity tests
RESULTS = ROOT / "benchmarks" / "results"
STEPS = (
    "seq_attention",
    "mlp_seq",
    "sequence_to_pair",
    "tri_mul_out",
    "tri_mul_in",
    "tri_att_start",
    "tri_att_end",
    "mlp_pair",
)


def step_flops(L: int, c_s: int = 1024, c_z: int = 128, seq_heads: int = 32, pair_heads: int = 4) -> dict[str, float]:
    """Useful FLOPs (2 per multiply-add) of each step of one block on one sequence of L residues."""
    tri_mul = 2 * L * L * c_z * (4 * c_z) + 2 * L * L * c_z * c_z * 2 + 2 * L**3 * c_z  # a, b; gate, out; a·bᵀ
    tri_att = 2 * L * L * c_z * (pair_heads + 4 * c_z + c_z) + 2 * 2 * L**3 * c_z  # bias, q k v g, out; q·kᵀ, a·v
    return {
        "seq_attention": 2 * L * c_s * 5 * c_s + 2 * 2 * L * L * c_s + 2 * L * L * c_z * seq_heads,
        "mlp_seq": 2 * 2 * L * c_s * 4 * c_s,
        "sequence_to_pair": 2 * L * c_s * c_z + 2 * L * L * c_z * c_z,
        "tri_mul_out": tri_mul,
        "tri_mul_in": tri_mul,
        "tri_att_start": tri_att,
        "tri_att_end": tri_att,
        "mlp_pair": 2 * 2 * L * L * c_z * 4 * c_z,
    }


CLOCK = time.perf_counter
"""Wall time; ``--cpu-time`` switches to the process's CPU time (steadier on a shared, loaded machine; with one
thread it is the compute time of that thread alone)."""


def mm_rate(size: int, seconds: float, dtype: torch.dtype = torch.float32) -> float:
    """Sustained ``torch.mm`` FLOP/s: the median of repeated size×size products over about ``seconds``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    began = time.perf_counter()
    while time.perf_counter() - began < seconds or len(times) < 3:
        start = CLOCK()
        torch.mm(a, b, out=out)
        times.append(CLOCK() - start)
    times.sort()
    return 2 * size**3 / times[len(times) // 2]


def time_block(
    length: int, plan, dtype: torch.dtype, autocast: bool = False
) -> tuple[dict[str, float], float, torch.Tensor]:
    """Seconds per step and for the whole block, and the block's pair output. ``autocast``: an fp32 block run
    under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bf16 matmuls, fp32 pair state)."""
    from randomize import randomize_

    from esmfold_lite.fold.chunking import reuse_buffers
    from esmfold_lite.fold.host_heap import kept_heap
    from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock

    block = randomize_(TriangularSelfAttentionBlock(1024, 128, 32, 32), seed=0).eval().to(dtype)
    seconds: dict[str, float] = dict.fromkeys(STEPS, 0.0)
    started: dict[str, float] = {}
    for name in STEPS:
        module = getattr(block, name)
        module.register_forward_pre_hook(lambda m, a, name=name: started.__setitem__(name, CLOCK()))
        module.register_forward_hook(
            lambda m, a, o, name=name: seconds.__setitem__(name, seconds[name] + CLOCK() - started[name])
        )
    generator = torch.Generator().manual_seed(length)

    def inputs(n):
        s = torch.randn(1, n, 1024, generator=generator).to(dtype)
        z = torch.randn(1, n, n, 128, generator=generator).to(dtype)
        return s, z, torch.ones(1, n)

    with (
        torch.no_grad(),
        reuse_buffers(),
        kept_heap("cpu"),  # as ESMFold.forward runs its blocks
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
    ):
        block(*inputs(min(length, 64)), plan.rows, plan.pair_blocks)  # warm-up: thread pool, kernel selection
        seconds.update(dict.fromkeys(STEPS, 0.0))
        s, z, mask = inputs(length)
        start = CLOCK()
        _, z = block(s, z, mask, plan.rows, plan.pair_blocks)
        total = CLOCK() - start
    return seconds, total, z


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--rows", type=int, default=None, help="rows per slice (default: the auto plan's)")
    parser.add_argument("--pair-blocks", type=int, default=None, help="pair blocks (default: the auto plan's)")
    parser.add_argument("--mm-size", type=int, default=2048)
    parser.add_argument("--mm-seconds", type=float, default=3.0)
    parser.add_argument(
        "--bf16", action="store_true", help="also time the block in bf16 and under bf16 autocast; compare with fp32"
    )
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time instead of wall time")
    parser.add_argument("--no-readme", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--tree", type=Path, default=None, help="import esmfold_lite from this source tree; print the JSON only"
    )
    parser.add_argument(
        "--compare", type=Path, nargs=2, metavar=("A", "B"), help="time the block from two source trees, alternating"
    )
    parser.add_argument("--runs", type=int, default=7, help="with --compare: runs per tree")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args)
    if args.tree:
        use_tree(args.tree)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time

    from esmfold_lite.fold.auto_chunk import choose_chunk_plan
    from esmfold_lite.fold.chunking import ChunkPlan
    from esmfold_lite.fold.config import TrunkConfig

    auto = choose_chunk_plan(args.length, TrunkConfig())
    plan = ChunkPlan(
        auto.rows if args.rows is None else args.rows,
        auto.pair_blocks if args.pair_blocks is None else args.pair_blocks,
    )
    mm_before = mm_rate(args.mm_size, args.mm_seconds)
    seconds, total, z32 = time_block(args.length, plan, torch.float32)
    mm_after = mm_rate(args.mm_size, args.mm_seconds)
    mm = (mm_before + mm_after) / 2
    flops = step_flops(args.length)
    result = {
        "command": " ".join(["python", "benchmarks/bench_trunk_flops.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },  # fmt: skip
        "clock": "process CPU time" if args.cpu_time else "wall time",
        "length": args.length,
        "plan": {"rows": plan.rows, "pair_blocks": plan.pair_blocks},
        "mm_gflops": {"before": mm_before / 1e9, "after": mm_after / 1e9, "mean": mm / 1e9},
        "steps": {
            name: {"gflop": flops[name] / 1e9, "seconds": seconds[name], "gflops": flops[name] / seconds[name] / 1e9}
            for name in STEPS
        },
        "total": {"gflop": sum(flops.values()) / 1e9, "seconds": total, "gflops": sum(flops.values()) / total / 1e9},
    }
    if args.bf16:
        result["bf16_mm_gflops"] = mm_rate(args.mm_size, args.mm_seconds, torch.bfloat16) / 1e9
        for name, dtype, autocast in (("bf16", torch.bfloat16, False), ("autocast", torch.float32, True)):
            seconds_bf, total_bf, z_bf = time_block(args.length, plan, dtype, autocast)
            result[name] = {
                "seconds": total_bf,
                "steps": seconds_bf,
                "max_abs_diff_over_max_abs": (z_bf.float() - z32).abs().max().item() / z32.abs().max().item(),
                "mean_abs_diff_over_mean_abs": ((z_bf.float() - z32).abs().mean() / z32.abs().mean()).item(),
            }
    print(json.dumps(result, indent=1))
    if args.tree:
        return 0  # another tree's numbers: nothing written into this checkout
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"trunk_flops_L{args.length}.json").write_text(json.dumps(result, indent=1))
    if not args.no_readme:
        write_readme(result)
    return 0


def use_tree(tree: Path) -> None:
    """Import esmfold_lite (and the tests' ``randomize``) from the source tree ``tree`` instead of this checkout."""
    tree = tree.resolve()
    if not (tree / "esmfold_lite" / "__init__.py").is_file():
        raise SystemExit(f"{tree} holds no esmfold_lite package")
    sys.path[:0] = [str(tree), str(tree / "tests")]
    for name in [m for m in sys.modules if m == "esmfold_lite" or m.startswith(("esmfold_lite.", "randomize"))]:
        del sys.modules[name]
    import esmfold_lite

    if not Path(esmfold_lite.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"esmfold_lite was imported from {esmfold_lite.__file__}, not from {tree}")


def compare(args: argparse.Namespace) -> int:
    """Time the block from two trees in alternating subprocesses; print and save medians and spreads."""
    trees = [path.resolve() for path in args.compare]
    child = [sys.executable, str(Path(__file__).resolve()), "--length", str(args.length), "--mm-seconds", "0.5"]
    for flag, value in (("--threads", args.threads), ("--rows", args.rows), ("--pair-blocks", args.pair_blocks)):
        if value is not None:
            child += [flag, str(value)]
    if args.cpu_time:
        child.append("--cpu-time")
    runs: dict[str, list[dict]] = {str(tree): [] for tree in trees}
    for index in range(2 * args.runs):
        tree = trees[(index + 1) // 2 % 2]  # A B B A A B B A ...
        out = subprocess.run([*child, "--tree", str(tree)], capture_output=True, text=True, check=True).stdout
        result = json.loads(out[out.index("{") :])
        runs[str(tree)].append(result)
        print(f"run {index + 1}/{2 * args.runs} {tree}: block {result['total']['seconds']:.3f} s", flush=True)

    def summary(results: list[dict]) -> dict:
        totals = sorted(r["total"]["seconds"] for r in results)
        return {
            "block_seconds": totals,
            "median": statistics.median(totals),
            "min": totals[0],
            "max": totals[-1],
            "steps_median": {name: statistics.median(r["steps"][name]["seconds"] for r in results) for name in STEPS},
            "mm_gflops_median": statistics.median(r["mm_gflops"]["mean"] for r in results),
        }

    plans = {json.dumps(r["plan"]) for results in runs.values() for r in results}
    if len(plans) > 1:
        raise SystemExit(f"the runs used different chunk plans {plans}: pass --rows and --pair-blocks")
    a, b = (summary(runs[str(tree)]) for tree in trees)
    report = {
        "command": " ".join(["python", "benchmarks/bench_trunk_flops.py", *(sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "load_average_after": list(os.getloadavg()),
        "length": args.length,
        "plan": runs[str(trees[0])][0]["plan"],
        "threads": runs[str(trees[0])][0]["machine"]["threads"],
        "clock": runs[str(trees[0])][0]["clock"],
        "trees": {str(trees[0]): a, str(trees[1]): b},
        "median_ratio_b_over_a": b["median"] / a["median"],
    }
    print(json.dumps(report, indent=1))
    for tree, s in report["trees"].items():
        n = len(s["block_seconds"])
        print(f"{tree}: median {s['median']:.3f} s, range {s['min']:.3f}-{s['max']:.3f} s over {n} runs")
    print(f"B / A (medians): {report['median_ratio_b_over_a']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"trunk_compare_L{args.length}.json").write_text(json.dumps(report, indent=1))
    return 0


def write_readme(result: dict) -> None:
    mm = result["mm_gflops"]["mean"]
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['processor']}, {result['machine']['threads']} threads, torch "
        f"{result['machine']['torch']}; {result['date']}. One full-width block at L={result['length']}, plan "
        f"rows={result['plan']['rows']}, pair_blocks={result['plan']['pair_blocks']}; `torch.mm` sustained "
        f"{mm:.0f} GFLOP/s (before {result['mm_gflops']['before']:.0f}, after {result['mm_gflops']['after']:.0f}).",
        "",
        "| step | GFLOP | seconds | GFLOP/s | % of torch.mm |",
        "|---|---|---|---|---|",
    ]
    for name, row in [*result["steps"].items(), ("**block total**", result["total"])]:
        share = 100 * row["gflops"] / mm
        lines.append(f"| {name} | {row['gflop']:.1f} | {row['seconds']:.2f} | {row['gflops']:.0f} | {share:.0f}% |")
    if "bf16" in result:
        lines += ["", f"bf16 on the same block (`torch.mm` in bf16: {result['bf16_mm_gflops']:.0f} GFLOP/s):", ""]
        lines += ["| variant | block seconds | speed-up over fp32 | pair output: max abs diff / max abs "
                  "| mean abs diff / mean abs |", "|---|---|---|---|---|"]  # fmt: skip
        variants = {
            "bf16": "weights and activations in bf16 (`load_model(dtype=torch.bfloat16)`)",
            "autocast": "fp32 model under `torch.autocast('cpu', dtype=torch.bfloat16)`",
        }
        for name, label in variants.items():
            bf = result[name]
            lines.append(
                f"| {label} | {bf['seconds']:.2f} | {result['total']['seconds'] / bf['seconds']:.2f}× "
                f"| {bf['max_abs_diff_over_max_abs']:.1e} | {bf['mean_abs_diff_over_mean_abs']:.1e} |"
            )
    write_section("flops", lines)


if __name__ == "__main__":
    sys.exit(main())
