"""How far esmfold_lite's coordinates are from transformers', next to how far transformers is from itself.

For each L in ``--lengths`` and each ``num_recycles`` in ``--recycles``, on the randomized model of
``bench_cpu.py`` (same worker, each case in its own subprocess), the largest Cα distance (Å) of:

* esmfold_lite (fp32, ``chunk_size="auto"``) from transformers (fp32);
* transformers from itself with its trunk input (the output of ``esm_s_mlp``) moved up by one ulp: the noise floor
  of any fp32 comparison — with recycling, a one-ulp change can flip a recycled distogram bin;
* transformers (fp32) and esmfold_lite (fp32) from transformers in fp64: how far each is from exact arithmetic.

Usage (from the repository root):  python benchmarks/bench_precision.py [--lengths 256 512] [--recycles 0 3] [--merge]
Writes benchmarks/results/precision.json and the ``precision-results`` section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import (  # noqa: E402
    RESULTS,
    ca_deviation,
    cpu_chunk,
    cpu_model,
    machine_info,
    run_case,
    save_model,
)
from readme_section import write_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--recycles", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of benchmarks/results/precision.json that this run does not repeat (run it in parts)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    cpu = cpu_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = save_model(tmp, args.blocks)
        for length in args.lengths:
            for recycles in args.recycles:
                cases = {
                    "lite": ("esmfold_lite", "auto", {}),
                    "ref": ("transformers", cpu_chunk(length), {}),
                    "ulp": ("transformers", cpu_chunk(length), {"perturb_ulp": True}),
                    "ref64": ("transformers", cpu_chunk(length), {"float64": True}),
                }
                pos = {name: tmp / f"{name}_{length}_{recycles}.pt" for name in cases}
                for name, (impl, chunk, options) in cases.items():
                    run_case(impl, length, chunk, model_dir, pos[name], num_recycles=recycles, **options)
                rows.append(
                    {
                        "length": length,
                        "num_recycles": recycles,
                        "lite_vs_ref": ca_deviation(pos["lite"], pos["ref"]),
                        "ref_vs_ulp": ca_deviation(pos["ref"], pos["ulp"]),
                        "ref_vs_fp64": ca_deviation(pos["ref"], pos["ref64"]),
                        "lite_vs_fp64": ca_deviation(pos["lite"], pos["ref64"]),
                        "cpu": cpu,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": " ".join(["python", "benchmarks/bench_precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "minutes": (time.perf_counter() - began) / 60,
        "blocks": args.blocks,
        "rows": rows,
    }
    if args.merge and (RESULTS / "precision.json").exists():
        result = merged(json.loads((RESULTS / "precision.json").read_text()), result)
    write_report(result)
    return 0


def merged(old: dict, new: dict) -> dict:
    """``new`` with the rows of ``old`` it did not repeat (same L and num_recycles), sorted; both commands kept."""

    def key(row: dict) -> tuple[int, int]:
        return row["length"], row["num_recycles"]

    repeated = {key(row) for row in new["rows"]}
    rows = sorted([row for row in old["rows"] if key(row) not in repeated] + new["rows"], key=key)
    return {
        **new,
        "command": f"{old['command']}` + `{new['command']}",
        "minutes": old["minutes"] + new["minutes"],
        "rows": rows,
    }


def write_report(result: dict) -> None:
    """benchmarks/results/precision.json and the precision-results section of benchmarks/README.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(result, indent=1))

    def cell(value):
        return "—" if value is None else f"{value:.1e}"

    lines = [
        f"Command: `{result['command']}`  ",
        f"{result['date']}, torch {result['machine']['torch']}, transformers {result['machine']['transformers']}; "
        f"{result['minutes']:.0f} min. Largest Cα distance in Å, model of the CPU benchmark ({result.get('blocks', 2)} "
        "full-width blocks, randomized weights):",
        "",
        "| L | num_recycles | esmfold_lite vs transformers | noise floor: transformers vs itself, input +1 ulp "
        "| transformers fp32 vs fp64 | esmfold_lite fp32 vs transformers fp64 | CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['length']} | {row['num_recycles']} | {cell(row['lite_vs_ref'])} | {cell(row['ref_vs_ulp'])} "
            f"| {cell(row['ref_vs_fp64'])} | {cell(row['lite_vs_fp64'])} | {row.get('cpu', 'not recorded')} |"
        )
    write_section("precision", lines)


if __name__ == "__main__":
    sys.exit(main())
