"""Proteome benchmark on the CPU: ``fold-proteome`` with 1 and 2 Ray workers, and its overhead against ``predict``.

One run folds the same random proteome (``--proteins`` sequences, lengths uniform in ``--min-length``..
``--max-length``, fixed seed) into a fresh output directory with:

1. ``predict_fasta`` in this process, the baseline;
2. ``fold_proteome`` with 1 worker;
3. ``fold_proteome`` with 2 workers.

Every run uses ``--threads`` torch threads per process (default 1: on a CPU shared with other work, a multi-threaded
torch loses most of its time waiting for preempted threads), the same token budget and ``num_recycles``. Ray is
started once, before the runs (its start-up time is reported on its own). For each run: the wall time of the call
(for Ray: starting the workers and loading the model in each included), and proteins/s and residues/s from the first
worker with its model loaded (``run.json``; for predict: from the first batch). Ray's overhead shows as the
start-up time (wall time not spent folding) and as the rate of 1 worker against ``predict``.

The model: a randomized ESMFold (tests/esmfold_reference.py) of ``--blocks`` trunk blocks with c_s=128, c_z=64 and a
4-layer × 160 ESM-2, written as the official fair-esm checkpoint pair. The numbers measure the runner, not ESMFold.

Usage (from the repository root):  python benchmarks/bench_proteome.py [--proteins 48] [--threads 1]
Results go to benchmarks/results/proteome.json and the proteome section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from readme_section import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # esmfold_reference: the randomized model the tests use
RESULTS = ROOT / "benchmarks" / "results"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def write_proteome(path: Path, count: int, low: int, high: int, seed: int = 0) -> int:
    """Random sequences; returns their total length."""
    rng = random.Random(seed)
    total = 0
    with open(path, "w") as handle:
        for i in range(count):
            length = rng.randint(low, high)
            total += length
            handle.write(f">prot{i}\n{''.join(rng.choice(AMINO_ACIDS) for _ in range(length))}\n")
    return total


def write_checkpoint(folder: Path, blocks: int) -> Path:
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    model = tiny_hf_esmfold(num_blocks=blocks, c_s=128, c_z=64, lm_layers=4, lm_dim=160, lm_heads=8)
    return write_fair_esmfold(model, folder)[0]


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proteins", type=int, default=48)
    parser.add_argument("--min-length", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--max-tokens-per-batch", type=int, default=400)
    parser.add_argument("--num-recycles", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of predict and of each worker")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three runs; medians are reported")
    args = parser.parse_args(argv)

    import ray

    from esmfold_lite.pipeline import predict_fasta
    from esmfold_lite.pipeline.proteome import fold_proteome

    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    common = dict(num_recycles=args.num_recycles, max_tokens_per_batch=args.max_tokens_per_batch, progress=False)
    load_before = os.getloadavg()
    samples: dict[str, list[dict]] = {"predict": [], "ray1": [], "ray2": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fasta = tmp / "proteome.fasta"
        residues = write_proteome(fasta, args.proteins, args.min_length, args.max_length)
        checkpoint = write_checkpoint(tmp / "weights", args.blocks)
        ray_start, _ = timed(
            lambda: ray.init(num_cpus=max(cores, 2 * args.threads), include_dashboard=False, log_to_driver=False)
        )
        try:
            for repeat in range(args.repeats):  # interleaved, so that a busy spell of the machine hits all three
                for key in samples:
                    outdir = tmp / f"{key}-{repeat}"
                    if key == "predict":
                        call = partial(predict_fasta, fasta, outdir, model_source=checkpoint, device="cpu", **common)
                    else:
                        call = partial(fold_proteome, fasta, outdir, model_source=checkpoint, workers=int(key[-1]),
                                       cpus_per_worker=args.threads, gpus_per_worker=0, **common)  # fmt: skip
                    seconds, _ = timed(call)
                    report = json.loads((outdir / "run.json").read_text())
                    rate = report["proteins_per_s"]
                    samples[key].append({"wall_s": seconds, "proteins_per_s": rate, "residues_per_s":
                                         report["residues_per_s"], "ok": report["proteins"]["ok"],
                                         "startup_s": seconds - report["proteins"]["folded"] / rate})  # fmt: skip
        finally:
            ray.shutdown()

    runs = []
    for key, label, workers in (("predict", "predict (this process)", "-"), ("ray1", "fold-proteome", 1),
                                ("ray2", "fold-proteome", 2)):  # fmt: skip
        run = {"runner": label, "workers": workers, "threads": args.threads, "samples": samples[key]}
        for field in ("wall_s", "proteins_per_s", "residues_per_s", "startup_s"):
            run[field] = statistics.median(sample[field] for sample in samples[key])
        run["ok"] = min(sample["ok"] for sample in samples[key])
        runs.append(run)
    results = {
        "command": " ".join(["python", "benchmarks/bench_proteome.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.machine(), "cores": cores, "torch": torch.__version__,
                    "ray": ray.__version__, "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},  # fmt: skip
        "proteome": {"proteins": args.proteins, "residues": residues, "lengths": [args.min_length, args.max_length]},
        "model": {"trunk_blocks": args.blocks, "c_s": 128, "c_z": 64, "lm": "4 layers x 160"},
        "num_recycles": args.num_recycles,
        "max_tokens_per_batch": args.max_tokens_per_batch,
        "ray_start_s": ray_start,
        "repeats": args.repeats,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "proteome.json").write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print(json.dumps(results, indent=2))
    return 0


def write_readme(results: dict) -> None:
    machine = results["machine"]
    baseline = results["runs"][0]["wall_s"]
    before, after = ("/".join(f"{x:.1f}" for x in machine[f"load_average_{when}"]) for when in ("before", "after"))
    lines = [
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['platform']}, {machine['cores']} CPU cores; torch {machine['torch']}, "
        f"Ray {machine['ray']}; {results['date']}. Load average (1/5/15 min) {before} before and {after} "
        "after the run (2 cores shared with other work: timings are noisy).",
        "",
        f"{results['proteome']['proteins']} proteins, {results['proteome']['residues']} residues (lengths "
        f"{results['proteome']['lengths'][0]}–{results['proteome']['lengths'][1]}), num_recycles="
        f"{results['num_recycles']}, max_tokens_per_batch={results['max_tokens_per_batch']}; Ray start-up "
        f"{results['ray_start_s']:.1f} s (not in the wall times below).",
        "",
        f"Medians of {results['repeats']} interleaved rounds (each round: predict, 1 worker, 2 workers); proteins/s of "
        "every round in brackets.",
        "",
        "| runner | workers | torch threads each | wall s | wall vs predict | start-up s | proteins/s | residues/s "
        "| ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        versus = "-" if run["runner"].startswith("predict") else f"{run['wall_s'] - baseline:+.1f} s"
        rates = ", ".join(f"{sample['proteins_per_s']:.2f}" for sample in run["samples"])
        lines.append(
            f"| {run['runner']} | {run['workers']} | {run['threads']} | {run['wall_s']:.1f} | {versus} | "
            f"{run['startup_s']:.1f} | {run['proteins_per_s']:.2f} ({rates}) | {run['residues_per_s']:.0f} | "
            f"{run['ok']} |"
        )
    lines += [
        "",
        "start-up s: wall time not spent folding (wall − proteins / proteins/s): for `fold-proteome` starting the "
        "worker processes and loading the model in each, for `predict` loading it once.",
    ]
    write_section("proteome", lines)


if __name__ == "__main__":
    sys.exit(main())
