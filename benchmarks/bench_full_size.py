"""Full-size ESMFold on the CPU, side by side with transformers: loading and folding at esmfold_v1's real size.

The model has esmfold_v1's shape (ESM-2 3B: 36 layers × 2560, 40 heads; 48 full-width trunk blocks; 8 structure
blocks; about 3.5 B parameters) with every parameter randomized (``tests/esmfold_reference.full_size_hf_esmfold``).
The script writes it once, in the official formats, the language model in fp16 and the rest in fp32 as the
published download sizes imply (5.7 GB for the LM's 2.8 B parameters, 2.7 GB for the trunk's 0.69 B):

* the fair-esm pair ``fair/esmfold_3B_v1.pt`` + ``fair/esm2_t36_3B_UR50D.pt`` (omegaconf configs, official keys);
* a transformers folder ``hf/`` (``save_pretrained``: config.json + safetensors).

Then every case runs in its own process (so its peak RSS is its own) and prints one JSON line:

* ``load``: esmfold_lite's ``load_model`` from both formats in float32 and bfloat16, and transformers'
  ``from_pretrained`` (float32) on the same folder: wall time, peak RSS of the load, and the peak after every weight
  has been read once (memory-mapped weights are only paged in when used), against the parameter bytes;
* ``fold``: one random sequence per L in ``--lengths`` with the default recycling (4 trunk passes), after a 16-residue
  warm-up: esmfold_lite in float32, in bfloat16 (LM and trunk), with the LM in bfloat16 and the trunk in float32,
  and (at the first L) the LM in float16, against transformers' ``EsmForProteinFolding`` in float32. Wall time of
  the forward pass, peak RSS, and the largest Cα distance of each to transformers, to esmfold_lite fp32, and the
  noise floor: esmfold_lite fp32 with its trunk input moved by one ulp (first L only).

Usage (from the repository root; about 40 GB of free disk in ``--workdir``, 24 GB of RAM):
    python benchmarks/bench_full_size.py [--lengths 128 256 384] [--workdir /tmp/esmfold_full_size]
Writes benchmarks/results/full_size.json and the full-size section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized transformers model the tests use
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cpu import _current_rss, _inputs, _peak_rss, gib, machine_info  # noqa: E402
from readme_section import README, write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FORMATS = {"fair": "fair-esm pickles", "hf": "transformers folder"}
PRECISIONS = {  # name -> (trunk dtype, LM dtype) of esmfold_lite's load_model
    "fp32": ("float32", "float32"),
    "bf16": ("bfloat16", "bfloat16"),
    "lm-bf16": ("float32", "bfloat16"),
    "lm-fp16": ("float32", "float16"),
}


# ---- worker side: one case per process -------------------------------------------------------------------------


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, object]:
    """(model, run(batch) -> final atom14 positions (B, L, 14, 3))."""
    source = Path(args.workdir) / ("fair/esmfold_3B_v1.pt" if args.format == "fair" else "hf")
    if args.impl == "esmfold_lite":
        from esmfold_lite import load_model

        trunk, lm = PRECISIONS[args.precision]
        model = load_model(source, dtype=trunk, lm_dtype=lm)

        def run(batch):
            out = model(batch.aatype, batch.mask, batch.residue_index, num_recycles=None, chunk_size="auto")
            return out["positions"][-1]

    else:
        from transformers import EsmForProteinFolding

        model = EsmForProteinFolding.from_pretrained(source, dtype=torch.float32).eval()

        def run(batch):
            out = model(batch.aatype, attention_mask=batch.mask.long(), position_ids=batch.residue_index)
            return out.positions[-1]

    return model, run


def worker(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    before = _current_rss()
    start = time.perf_counter()
    model, run = _load(args)
    result = {"load_seconds": time.perf_counter() - start, "rss_before": before, "load_peak_rss": _peak_rss()}
    result["parameter_bytes"] = _parameter_bytes(model)
    if args.length == 0:  # load only: read every weight once, as the first forward pass does
        with torch.no_grad():
            for p in model.parameters():
                p.float().sum()
        result["touched_peak_rss"] = _peak_rss()
    else:
        if args.perturb_ulp:  # the trunk's sequence input, one ulp up: the noise floor of the comparison
            model.esm_s_mlp.register_forward_hook(
                lambda m, i, out: torch.nextafter(out, torch.full_like(out, torch.inf))
            )
        with torch.no_grad():
            run(_inputs(16))  # warm-up: thread pools, first-call kernel selection, weights paged in
            batch = _inputs(args.length)
            start = time.perf_counter()
            positions = run(batch)
            result["seconds"] = time.perf_counter() - start
        result["peak_rss"] = _peak_rss()
        torch.save(positions.double(), args.positions)
    print(json.dumps(result))


def prepare(args: argparse.Namespace) -> None:
    """Write the randomized full-size model in both official formats (LM fp16, trunk fp32)."""
    from esmfold_reference import full_size_hf_esmfold, write_fair_esmfold

    workdir = Path(args.workdir)
    model = full_size_hf_esmfold()
    model.esm.half()
    write_fair_esmfold(model, workdir / "fair")
    model.save_pretrained(workdir / "hf")
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters())}))


# ---- driver side -----------------------------------------------------------------------------------------------


def run_case(args: argparse.Namespace, positions: Path | None = None, **case) -> dict:
    """One worker process for ``case`` (its options); the final positions go to ``positions``."""
    command = [sys.executable, __file__, "--workdir", str(args.workdir), "worker"]
    command += ["--positions", str(positions)] if positions is not None else []
    for key, value in case.items():
        if value is True:
            command.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            command += [f"--{key.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        result = {"error": (done.stderr.strip().splitlines() or ["killed"])[-1], "returncode": done.returncode}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(case, process_seconds=time.perf_counter() - start)
    print(json.dumps(result), flush=True)
    return result


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (needs root), so every load reads its files from disk; False if not allowed."""
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def ca_deviation(a: Path, b: Path) -> dict[str, float] | None:
    """The largest and the mean Cα distance (Å) between two saved atom14 positions (B, L, 14, 3); None if one is
    missing."""
    if not (a.exists() and b.exists()):
        return None
    distance = (torch.load(a)[..., 1, :] - torch.load(b)[..., 1, :]).norm(dim=-1)
    return {"max": distance.max().item(), "mean": distance.mean().item()}


def fold_cases(length: int, first: bool) -> list[dict]:
    cases = [{"impl": "transformers", "format": "hf", "precision": "fp32"}]
    cases += [{"impl": "esmfold_lite", "format": "fair", "precision": p} for p in ("fp32", "bf16", "lm-bf16")]
    if first:
        cases.append({"impl": "esmfold_lite", "format": "fair", "precision": "lm-fp16"})
        cases.append({"impl": "esmfold_lite", "format": "fair", "precision": "fp32", "perturb_ulp": True})
    return [{**case, "length": length} for case in cases]


def case_name(case: dict) -> str:
    return f"{case['impl']}-{case['precision']}" + ("-ulp" if case.get("perturb_ulp") else "")


def write_report(results: dict) -> None:
    for part in ("load", "fold"):  # the processes' wall time, also for a part kept from an earlier run
        results[f"{part}_minutes"] = sum(r["process_seconds"] for r in results[part]) / 60
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "full_size.json").write_text(json.dumps(results, indent=1))
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {m['cpus']} cores of an {m['model']}, {m['ram_gib']} GiB, torch {m['torch']}, "
        f"transformers {m['transformers']}; {results['parameters'] / 1e9:.2f} B parameters, every one randomized. "
        f"Folding: `{results.get('fold_command', results['command'])}` ({results['fold_minutes']:.0f} min); "
        f"loading: `{results.get('load_command', results['command'])}` ({results['load_minutes']:.0f} min; page "
        f"cache {'dropped before each load' if all(r.get('cold_cache') for r in results['load']) else 'kept'}).",
        "",
        "**Loading** (load peak: the process's peak RSS up to the end of the load, the 0.22 GiB of Python and torch "
        "included; resident peak: the same after every weight was read once, as the first forward pass does; "
        "parameter bytes in the dtype loaded; each case in its own process):",
        "",
        "| loader | file format | dtype | seconds | load peak GiB | resident peak GiB | parameter GiB "
        "| resident / parameters |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["load"]:
        if "error" in r:
            lines.append(f"| {r['impl']} | {FORMATS[r['format']]} | {r['precision']} | error: {r['error']} |||||")
            continue
        ratio = r["touched_peak_rss"] / r["parameter_bytes"]
        lines.append(
            f"| {r['impl']} | {FORMATS[r['format']]} | {r['precision']} | {r['load_seconds']:.1f} "
            f"| {gib(r['load_peak_rss'])} "
            f"| {gib(r['touched_peak_rss'])} | {gib(r['parameter_bytes'])} | {ratio:.2f} |"
        )
    lines += [
        "",
        "**Folding** one random sequence, default recycling (4 trunk passes); time of the forward pass after a "
        "warm-up; Cα: the largest / the mean Cα distance in Å (noise floor: esmfold_lite fp32 against itself with "
        "its trunk input moved by one ulp):",
        "",
        "| L | implementation | dtypes | seconds | peak RSS GiB | speed-up vs transformers | Cα vs transformers |"
        " Cα vs esmfold_lite fp32 |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["fold"]:
        name = PRECISIONS.get(r["precision"], ())
        dtypes = "fp32" if r["impl"] == "transformers" else f"LM {name[1]}, trunk {name[0]}"
        dtypes += " (+1 ulp)" if r.get("perturb_ulp") else ""
        if "error" in r:
            lines.append(f"| {r['length']} | {r['impl']} | {dtypes} | error: {r['error']} |||||")
            continue
        ref = next((x for x in results["fold"] if x["length"] == r["length"] and x["impl"] == "transformers"), {})
        speed = f"{ref['seconds'] / r['seconds']:.2f}×" if "seconds" in ref else ""
        fmt = lambda v: "" if v is None else f"{v['max']:.2g} / {v['mean']:.2g}"  # noqa: E731
        lines.append(
            f"| {r['length']} | {r['impl']} | {dtypes} | {r['seconds']:.1f} | {gib(r['peak_rss'])} | {speed} "
            f"| {fmt(r.get('ca_vs_transformers'))} | {fmt(r.get('ca_vs_lite_fp32'))} |"
        )
    write_section("full-size", lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/esmfold_full_size"))
    sub = parser.add_subparsers(dest="mode")
    work = sub.add_parser("worker", help="internal: run one case and print JSON")
    work.add_argument("--impl", choices=["esmfold_lite", "transformers"], required=True)
    work.add_argument("--format", choices=["fair", "hf"], required=True)
    work.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    work.add_argument("--length", type=int, default=0, help="0: load only")
    work.add_argument("--positions")
    work.add_argument("--perturb-ulp", action="store_true")
    sub.add_parser("prepare", help="internal: write the randomized full-size model")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 384])
    parser.add_argument(
        "--parts",
        nargs="*",
        choices=["load", "fold"],
        default=["load", "fold"],
        help="what to run; the other part's rows are kept from benchmarks/results/full_size.json (none: rewrite the "
        "report from it and the saved positions)",
    )
    args = parser.parse_args(argv)
    if args.mode == "worker":
        worker(args)
        return 0
    if args.mode == "prepare":
        prepare(args)
        return 0

    began = time.perf_counter()
    results: dict = {
        "command": " ".join(["python", "benchmarks/bench_full_size.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "load": [],
        "fold": [],
    }
    if not (args.workdir / "hf" / "config.json").exists():
        done = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "prepare"], check=True,
                              capture_output=True, text=True)  # fmt: skip
        results["parameters"] = json.loads(done.stdout.strip().splitlines()[-1])["parameters"]
    results["prepare_minutes"] = (time.perf_counter() - began) / 60
    earlier_path = RESULTS / "full_size.json"
    earlier = json.loads(earlier_path.read_text()) if earlier_path.exists() else {}
    if "load" in args.parts:
        for impl, fmt, precision in [
            ("esmfold_lite", "fair", "fp32"), ("esmfold_lite", "fair", "bf16"),
            ("esmfold_lite", "hf", "fp32"), ("esmfold_lite", "hf", "bf16"), ("transformers", "hf", "fp32"),
        ]:  # fmt: skip
            cold = drop_page_cache()
            results["load"].append({**run_case(args, impl=impl, format=fmt, precision=precision), "cold_cache": cold})
    else:
        results["load"] = earlier.get("load", [])
        results["load_command"] = earlier.get("load_command", earlier.get("command"))
    positions = args.workdir / "positions"
    positions.mkdir(exist_ok=True)
    if "fold" not in args.parts:
        results["fold"] = earlier.get("fold", [])
        results["fold_command"] = earlier.get("fold_command", earlier.get("command"))
    for index, length in enumerate(args.lengths if "fold" in args.parts else []):
        rows = []
        for case in fold_cases(length, first=index == 0):
            rows.append(run_case(args, **case, positions=positions / f"{case_name(case)}_{length}.pt"))
        results["fold"] += rows
    for row in results["fold"]:  # from the saved positions, also for rows kept from an earlier run
        name, length = case_name(row), row["length"]
        mine = positions / f"{name}_{length}.pt"
        row["ca_vs_transformers"] = ca_deviation(positions / f"transformers-fp32_{length}.pt", mine)
        row["ca_vs_lite_fp32"] = ca_deviation(positions / f"esmfold_lite-fp32_{length}.pt", mine)
    results.setdefault("parameters", next((r["parameter_bytes"] // 4 for r in results["load"] if
                                           r.get("precision") == "fp32" and "error" not in r), 0))  # fmt: skip
    write_report(results)
    print(f"done in {(time.perf_counter() - began) / 60:.1f} min; wrote {README} and {RESULTS}/full_size.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
