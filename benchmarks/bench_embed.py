"""Embedding throughput on the CPU: ``esmfold-lite embed`` against fair-esm's ``extract.py``, same model, same
sequences, one run.

The script writes once, into ``--workdir`` (reused by later runs while model shape and seed match):

* an ESM-2 of the 650M shape (fair-esm's ``esm2_t33_650M_UR50D``: 33 layers, embed_dim 1280, 20 heads, FFN 5120,
  token dropout; 651 M parameters), every parameter randomized (``tests/randomize.py``), in the layout of the
  released file (``tests/test_esm2_loading.save_official``): ``esm2_t33_650M_UR50D.pt`` = {"cfg": {"model": omegaconf
  config, "task": ...}, "model": fp32 state with the ``encoder.sentence_encoder.`` / ``encoder.lm_head.`` prefixes},
  and beside it ``esm2_t33_650M_UR50D-contact-regression.pt``, which fair-esm's loader requires. The name starts
  with ``esm2`` because fair-esm picks the ESM-2 format by it. Both tools load this same file;
* ``--sequences`` random protein sequences (the 20 standard amino acids, uniform; lengths uniform in
  [``--min-length``, ``--max-length``]; fixed ``--seed``) in one FASTA, ids ``seq00000`` ...

Then each case runs in its own process, one after the other, all with 4,096 tokens per batch on the CPU:

1. fair-esm: ``python extract.py MODEL.pt FASTA OUT --include mean per_tok --repr_layers 33 --toks_per_batch 4096
   --nogpu``, fp32. fair-esm 2.0.0's wheel has no ``extract.py`` and no ``esm-extract`` console script (the script
   lives in the repository's ``scripts/``), and esmfold_lite carries no third-party code, so ``--extract PATH`` names
   a copy of the v2.0.0 tag's ``scripts/extract.py`` (``git clone https://github.com/facebookresearch/esm; git -C esm
   checkout v2.0.0``: ``esm/scripts/extract.py``); its git blob hash is checked before it runs. It needs one
   environment variable with torch >= 2.6: fair-esm's loader calls ``torch.load`` without ``weights_only``, torch
   now defaults to ``weights_only=True``, and the released checkpoints hold an omegaconf config, which that refuses;
   ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (torch's own switch) restores the old default for that
   process. fair-esm itself is not changed;
2. ``esmfold-lite embed FASTA -o OUT --model MODEL.pt --layers 33 --max-tokens-per-batch 4096 --device cpu --dtype
   float32 --format pt``: the same outputs (per-token and mean of layer 33, one ``.pt`` per sequence, plus the
   ``<cls>`` vector, which embed always saves);
3. the same with ``--format safetensors --shard-size S`` (shards and an SQLite index);
4. and 5. the same as 3 with ``--dtype bfloat16`` and ``--dtype float16`` (half-precision rows);
6. resume: case 3 again into a fresh OUTDIR, killed with SIGKILL as soon as the index (OUT/index.sqlite, polled
   read-only) holds at least ``--kill-at`` of the sequences; then the same command once more, timed. Reported: the
   sequences in the index at the kill, the time of the resumed run and what it embedded, and that the final index
   holds every id exactly once.

Every command runs inside a thin wrapper (``bench_embed.py measure``) that starts it in the same process (``runpy``:
the script as ``__main__``, for esmfold-lite the module ``esmfold_lite.cli``) and reads the process's peak RSS
(``VmHWM`` of /proc/self/status) when it ends: interpreter, torch, model and outputs included. Timings: the wall time
of the whole command (interpreter start, imports, model load included) from the driver; sequences/s and residues/s
over that wall time; "startup": the time until the command's first progress output (fair-esm's ``Read FASTA with N
sequences``, embed's progress bar), i.e. imports, model load and FASTA scan; "embedding seq/s": the sequences over
the rest. After the runs, every output is read back and compared with fair-esm fp32: the largest absolute difference
of the mean representations (fair-esm's ``mean_representations[33]`` of each ``.pt``, ours from the ``.pt`` or
``esmfold_lite.open_embeddings(OUT)[id]``) and of the per-token representations, over all sequences.

Sizes. The 650M model costs about 1.3 GFLOP per token (2 × 651 M multiply-adds; attention is small at these lengths)
and both tools are bound by the same fp32 GEMMs, so a run's time is its tokens over the machine's rate. Measured on
2 cores of the AVX-512/AMX Xeon this was written on (a 48-sequence trial run, the machine shared: load average 3,
fp32 ``torch.mm`` at 190 GFLOP/s against 360 when quiet) the embedding phase ran at about 50 tokens/s in fp32 (both
tools), 110 in bf16 and 60 in fp16; quiet, expect about 1.8× that. The whole benchmark costs about 4.5 fp32 runs
(fair-esm, pt, safetensors, and the resume's killed plus resumed run), one bf16 and one fp16 run, about 0.057 s per
token on a quiet machine, so 45 minutes hold about 45 k tokens: 2,000 sequences of 10-30 residues (mean 20, 22
tokens with <cls>/<eos>; 44 k tokens). Short sequences change no per-token cost (GEMM rows are tokens; a batch of
4,096 tokens is a batch of 4,096 rows either way), only the per-sequence overhead (one file or index row each),
which is small beside 1.3 GFLOP a token. Realistic lengths take proportionally longer: ``--min-length 30
--max-length 90`` about 2 hours. ``--shard-size`` defaults to 8 MiB (embed's default: 256): a shard of 10-30-residue
sequences then holds about 70 of them, so the index grows at the end of every chunk of 256 sequences (embed writes
after each) and the kill lands within a chunk (13% of 2,000) after ``--kill-at``, instead of after all 2,000 (256
MiB would hold them all); it also bounds the arrays waiting in memory to 8 MiB.

Usage (from the repository root; about 5 GB free in ``--workdir``, 6 GB of RAM for fair-esm's load):
    python benchmarks/bench_embed.py --extract EXTRACT_PY [--sequences 2000] [--min-length 10] [--max-length 30]
    python benchmarks/bench_embed.py --extract EXTRACT_PY --quick   # smoke: a 6-layer x 320 model, 300 sequences
Writes benchmarks/results/embed.json and the embedding section of benchmarks/README.md (a --quick run is labeled as
a smoke run there).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from readme_section import README, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXTRACT_BLOB = "68864d54d2c5c1de0db2a61f335ccd6965528731"  # git blob of scripts/extract.py at fair-esm's v2.0.0 tag
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
TOKENS_PER_BATCH = 4096
SHAPES = {  # fair-esm's released ESM-2 shapes: (file stem, layers, embed_dim, heads)
    "650M": ("esm2_t33_650M_UR50D", 33, 1280, 20),
    "8M": ("esm2_t6_8M_UR50D", 6, 320, 20),
}
CASES = {  # name -> (label, embed options; None: fair-esm)
    "fair-esm": ("fair-esm extract.py", None),
    "pt": ("esmfold-lite embed, pt", ["--dtype", "float32", "--format", "pt"]),
    "safetensors": ("esmfold-lite embed, safetensors", ["--dtype", "float32", "--format", "safetensors"]),
    "bf16": ("esmfold-lite embed, safetensors", ["--dtype", "bfloat16", "--format", "safetensors"]),
    "fp16": ("esmfold-lite embed, safetensors", ["--dtype", "float16", "--format", "safetensors"]),
}


# ---- the wrapper: one command in this process, its peak RSS at the end -----------------------------------------------


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (``VmHWM``; ``ru_maxrss`` would also count the RSS of the
    parent at the fork that started it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(argv: list[str]) -> int:
    """``measure --report PATH -- (-m MODULE | SCRIPT) ARGS...``: run the module or script as ``__main__`` here, then
    write {"peak_rss", "exit_code", "seconds"} to PATH."""
    import runpy

    report, command = Path(argv[argv.index("--report") + 1]), argv[argv.index("--") + 1 :]
    code, start = 1, time.perf_counter()
    try:
        if command[0] == "-m":
            sys.argv = [command[1], *command[2:]]
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(command)
            runpy.run_path(command[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        seconds = time.perf_counter() - start
        report.write_text(json.dumps({"peak_rss": _peak_rss(), "exit_code": code, "seconds": seconds}))
    return code


# ---- preparation: the model and the FASTA, written once --------------------------------------------------------------


def prepare_model(workdir: Path, shape: str, seed: int) -> bool:
    """(In its own process.) The randomized ESM-2 of ``shape`` in the released layout, unless already there; True if
    it was written now."""
    stem, layers, dim, heads = SHAPES[shape]
    meta = workdir / f"{stem}.json"
    wanted = {"layers": layers, "embed_dim": dim, "heads": heads, "seed": seed, "randomized": True}
    if meta.exists() and (workdir / f"{stem}.pt").exists():
        written = json.loads(meta.read_text())
        if {k: written.get(k) for k in wanted} == wanted:
            return False
    sys.path.insert(0, str(ROOT / "tests"))
    import esm
    from randomize import randomize_
    from test_esm2_loading import save_official

    model = esm.model.esm2.ESM2(layers, dim, heads, esm.Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    randomize_(model, seed)
    save_official(model.eval(), workdir / f"{stem}.pt")  # writes <stem>-contact-regression.pt beside it
    meta.write_text(json.dumps({**wanted, "parameters": sum(p.numel() for p in model.parameters())}))
    return True


def write_fasta(path: Path, count: int, min_length: int, max_length: int, seed: int) -> dict[str, int]:
    """``count`` random sequences (lengths uniform in [min_length, max_length]); returns id -> length."""
    rng = random.Random(seed)
    lengths = {f"seq{i:05d}": rng.randint(min_length, max_length) for i in range(count)}
    text = "".join(f">{id}\n{''.join(rng.choices(AMINO_ACIDS, k=n))}\n" for id, n in lengths.items())
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return lengths


def git_blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- driver: one process per case ------------------------------------------------------------------------------------


def index_count(outdir: Path) -> int:
    """Rows in OUTDIR's embedding index (read-only, a moment's shared lock); 0 while there is none yet."""
    path = outdir / "index.sqlite"
    if not path.exists():
        return 0
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:  # being created, or locked for a moment
        return 0


def run_command(name: str, command: list[str], logs: Path, env: dict | None = None, kill_when=None) -> dict:
    """Run ``command`` (``-m MODULE ...`` or ``SCRIPT ...``) in the wrapper; wall time, peak RSS, exit code, and the
    time of each output chunk (for the startup time). ``kill_when()`` true: SIGKILL, and the result says so."""
    report = logs / f"{name}.report.json"
    report.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "measure", "--report", str(report), "--", *command]
    chunks: list[tuple[float, bytes]] = []
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )

    def read() -> None:
        while data := os.read(process.stdout.fileno(), 65536):
            chunks.append((time.perf_counter() - start, data))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    while process.poll() is None:
        if kill_when is not None and kill_when():
            process.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1 if kill_when is not None else 0.5)
    process.wait()
    seconds = time.perf_counter() - start
    reader.join()
    process.stdout.close()
    output = b"".join(data for _, data in chunks).decode(errors="replace")
    (logs / f"{name}.log").write_text(output)
    result: dict = {"seconds": seconds, "returncode": process.returncode, "killed": killed, "chunks": chunks}
    if report.exists():
        result.update(json.loads(report.read_text()))
    if process.returncode != 0 and not killed:
        lines = [line for line in re.split(r"[\r\n]+", output) if line.strip()]
        result["error"] = lines[-1] if lines else f"exit status {process.returncode}"
    return result


def startup_seconds(chunks: list[tuple[float, bytes]], marker: bytes) -> float | None:
    """When ``marker`` first appeared in the output (the chunk that completed it)."""
    seen = b""
    for at, data in chunks:
        seen += data
        if marker in seen:
            return at
    return None


def embedded_before(log_text: str) -> tuple[int, int] | None:
    """(embedded in this run, embedded before) from embed's closing log line."""
    match = re.search(r"embedded (\d+) sequences .*?; (\d+) embedded before", log_text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def case_row(name: str, label: str, dtype: str, result: dict, lengths: dict[str, int], marker: bytes) -> dict:
    chunks = result.pop("chunks")
    row = {"case": name, "label": label, "dtype": dtype, **result}
    if "error" in row or row.get("killed"):
        return row
    startup = startup_seconds(chunks, marker)
    row["startup_seconds"] = startup
    row["seq_per_s"] = len(lengths) / row["seconds"]
    row["residues_per_s"] = sum(lengths.values()) / row["seconds"]
    if startup is not None:
        row["embedding_seq_per_s"] = len(lengths) / (row["seconds"] - startup)
    print(
        f"{name}: {row['seconds']:.1f} s, {row['seq_per_s']:.2f} seq/s, peak RSS {gib(row.get('peak_rss', 0))} GiB",
        flush=True,
    )
    return row


def compare(ids: list[str], layer: int, outputs: dict[str, tuple[str, Path]], reference: Path) -> dict[str, dict]:
    """Per output: the largest |difference| to fair-esm of the mean and per-token representations of ``layer``."""
    import torch

    from esmfold_lite import open_embeddings

    readers, diffs = {}, {}
    for name, (kind, path) in outputs.items():
        if kind == "pt":
            readers[name] = lambda id, path=path: torch.load(path / f"{id}.pt")
        else:
            shards = open_embeddings(path)
            readers[name] = shards.__getitem__
        diffs[name] = {"mean": 0.0, "per_token": 0.0}
    scale = 0.0
    for id in ids:
        ref = torch.load(reference / f"{id}.pt")
        ref_mean, ref_tokens = ref["mean_representations"][layer], ref["representations"][layer]
        scale = max(scale, ref_mean.abs().max().item())
        for name, read in readers.items():
            got = read(id)
            diff = diffs[name]
            diff["mean"] = max(diff["mean"], (got["mean_representations"][layer].float() - ref_mean).abs().max().item())
            tokens = got["representations"][layer].float()
            diff["per_token"] = max(diff["per_token"], (tokens - ref_tokens).abs().max().item())
    for diff in diffs.values():
        diff["reference_mean_max_abs"] = scale
    return diffs


def mean_difference(a: Path, b: Path, ids: list[str], layer: int) -> float:
    """The largest |difference| of the mean representations of ``layer`` between two safetensors outputs."""
    from esmfold_lite import open_embeddings

    first, second = open_embeddings(a), open_embeddings(b)
    return max(
        (first[id]["mean_representations"][layer] - second[id]["mean_representations"][layer]).abs().max().item()
        for id in ids
    )


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def machine_info() -> dict:
    import importlib.metadata

    import torch

    import esmfold_lite

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_cpu import cpu_model

    return {
        "model": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "ram_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fair_esm": importlib.metadata.version("fair-esm"),
        "esmfold_lite": esmfold_lite.__version__,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def shown_command(command: list[str], workdir: Path, extract: Path) -> str:
    """A case's command as a user types it (paths relative to the work directory)."""
    if command[0] == "-m":
        words = ["esmfold-lite", *command[2:]] if command[1] == "esmfold_lite.cli" else ["python", *command]
    else:
        words = ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", "python", "extract.py", *command[1:]]
    text = " ".join(words).replace(f"{workdir}/", "")
    return text.replace(str(extract.parent) + "/", "")


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embed.json").write_text(json.dumps(results, indent=1))
    m, s = results["machine"], results["settings"]
    rows = results["cases"]
    reference = next((r for r in rows if r["case"] == "fair-esm" and "error" not in r), None)
    lines = []
    if s["quick"]:
        lines += [
            f"**Smoke run only (`--quick`: a {s['layers']}-layer × {s['embed_dim']} model, {s['sequences']} "
            "sequences), made to check the script; these are not the benchmark's numbers.** The benchmark is the "
            "full run, `python benchmarks/bench_embed.py`, which replaces this section.",
            "",
        ]
    lines += [
        f"Command: `{results['command']}`; whole run {results['total_minutes']:.1f} min (model and FASTA "
        f"{'written' if results['prepared'] else 'reused'}: {results['prepare_minutes']:.1f} min).  ",
        f"Machine: {m['model']}, {m['cpus']} CPU cores (torch threads {m['threads']}), {m['ram_gib']} GiB RAM; "
        f"Python {m['python']}, torch {m['torch']}, fair-esm {m['fair_esm']}, esmfold-lite {m['esmfold_lite']}; "
        f"{results['date']}; load average at the start {m['load']}.  ",
        f"Model: ESM-2 {s['layers']} layers × {s['embed_dim']}, {s['heads']} heads, {s['parameters'] / 1e6:.0f} M "
        f"parameters, randomized, fair-esm's released layout (`{s['model_file']}`, fp32). Sequences: "
        f"{s['sequences']} random, {s['min_length']}–{s['max_length']} residues ({s['residues']} in all, seed "
        f"{s['seed']}). Layer {s['layers']}, {TOKENS_PER_BATCH} tokens per batch, CPU; safetensors shards of "
        f"{s['shard_size']:g} MiB.",
        "",
        "Wall time of the whole command (imports and model load included); seq/s and residues/s over it; startup: "
        "until the first progress output (imports, model load, FASTA scan); embedding seq/s: over the rest; peak RSS "
        "of the process; |Δ|: the largest absolute difference to fair-esm fp32 over all sequences, of the mean "
        f"representation (its largest magnitude: {results.get('reference_mean_max_abs') or float('nan'):.3g}) and of "
        "the per-token representations:",
        "",
        "| case | dtype | wall s | startup s | seq/s | residues/s | speed-up vs fair-esm | embedding seq/s "
        "| embedding speed-up | peak RSS GiB | max abs Δ mean | max abs Δ per-token |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["case"].startswith("resume"):
            continue
        name = r["label"] + (" (half precision)" if r["dtype"] in ("bfloat16", "float16") else "")
        if "error" in r:
            lines.append(f"| {name} | {r['dtype']} | error: {r['error']} ||||||||||")
            continue
        speed = embed_speed = "—"
        if reference is not None and r is not reference:
            speed = f"{r['seq_per_s'] / reference['seq_per_s']:.2f}×"
            if r.get("embedding_seq_per_s") and reference.get("embedding_seq_per_s"):
                embed_speed = f"{r['embedding_seq_per_s'] / reference['embedding_seq_per_s']:.2f}×"
        startup = "—" if r.get("startup_seconds") is None else f"{r['startup_seconds']:.1f}"
        embedding = "—" if r.get("embedding_seq_per_s") is None else f"{r['embedding_seq_per_s']:.2f}"
        diff = r.get("diff")
        delta = ("—", "—") if diff is None else (f"{diff['mean']:.1e}", f"{diff['per_token']:.1e}")
        if r is reference:
            delta = ("(reference)", "(reference)")
        lines.append(
            f"| {name} | {r['dtype']} | {r['seconds']:.1f} | {startup} | {r['seq_per_s']:.2f} "
            f"| {r['residues_per_s']:.0f} | {speed} | {embedding} | {embed_speed} | {gib(r['peak_rss'])} "
            f"| {delta[0]} | {delta[1]} |"
        )
    if reference is not None:
        met = [
            f"{r['label']} {r['dtype']} ({r['seq_per_s'] / reference['seq_per_s']:.2f}×)"
            for r in rows
            if r is not reference and "error" not in r and not r["case"].startswith("resume")
            and r["seq_per_s"] >= 2 * reference["seq_per_s"]
        ]  # fmt: skip
        lines += ["", f"Issue 20's target, at least 2× fair-esm's sequences/s (whole command): "
                  f"{'met by ' + ', '.join(met) if met else 'not met by any case'}."]  # fmt: skip
    resume = results.get("resume")
    if resume:
        lines += ["", resume_text(resume, s["sequences"])]
    lines += ["", "Commands of the cases (in `--workdir`; `extract.py`: fair-esm v2.0.0's `scripts/extract.py`):", ""]
    lines += [f"* {r['case']}: `{r['command']}`" for r in rows if "command" in r and r["case"] != "resume-killed"]
    write_section("embed", lines)


def resume_text(resume: dict, total: int) -> str:
    if "error" in resume:
        return f"Resume: failed ({resume['error']})."
    first = resume["killed_run"]
    if not first.get("killed"):
        head = f"Resume: the first run finished ({first['seconds']:.1f} s) before the index reached the kill point, "
        return head + "so nothing was resumed."
    if resume["done_at_kill"] == total:
        return (
            f"Resume: the kill came after {first['seconds']:.1f} s, when every sequence was already in the index, so "
            "nothing was left to resume; run it again (or with another --kill-at)."
        )
    again = resume["resumed_run"]
    done = resume["embedded_in_resumed_run"]
    text = (
        f"Resume (the safetensors fp32 case again, into a fresh OUTDIR): SIGKILL after {first['seconds']:.1f} s, when "
        f"the index held {resume['done_at_kill']} of {total} sequences ({resume['done_at_kill'] / total:.0%}); the "
        f"same command again took {again['seconds']:.1f} s (peak RSS {gib(again['peak_rss'])} GiB) and embedded "
        f"{'?' if done is None else done[0]} sequences, {'?' if done is None else done[1]} found done"
    )
    whole = resume.get("uninterrupted_seconds")
    if whole:
        text += f" (the uninterrupted run: {whole:.1f} s)"
    text += (
        f". The final index holds {resume['final_rows']} rows, {resume['final_distinct']} distinct ids, "
        f"{'every' if resume['all_ids'] else 'NOT every'} id of the FASTA once"
    )
    diff = resume["resumed_run"].get("diff")
    if diff is not None:
        text += f"; largest |Δ| to fair-esm fp32: {diff['mean']:.1e} (mean), {diff['per_token']:.1e} (per token)"
    if resume.get("diff_to_uninterrupted") is not None:
        uninterrupted = resume["diff_to_uninterrupted"]
        text += f"; largest |Δ| of its mean representations to the uninterrupted run: {uninterrupted:.1e}"
    return text + "."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"]:
        return measure(argv[1:])
    if argv[:1] == ["prepare"]:  # prepare WORKDIR SHAPE SEED
        print(json.dumps({"written": prepare_model(Path(argv[1]), argv[2], int(argv[3]))}))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--extract",
        type=Path,
        help="fair-esm v2.0.0's scripts/extract.py (from a clone of github.com/facebookresearch/esm at tag v2.0.0); "
        "needed for the fair-esm case",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "esmfold_bench_embed")
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--min-length", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="of the sequences and of the model's parameters")
    parser.add_argument(
        "--shard-size", type=float, default=8.0, help="embed --shard-size (MiB) of the safetensors cases"
    )
    parser.add_argument("--kill-at", type=float, default=0.5, help="resume: kill once the index holds this fraction")
    parser.add_argument("--cases", nargs="+", choices=[*CASES, "resume"], default=[*CASES, "resume"])
    parser.add_argument("--keep-outputs", action="store_true", help="keep the embeddings in WORKDIR/out")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 6 layers x 320 (esm2_t6_8M's shape), 300 sequences"
    )
    args = parser.parse_args(argv)
    shape = "8M" if args.quick else "650M"
    if args.quick:
        args.sequences, args.shard_size = 300, 0.25  # two chunks of embed's 256: something is left to resume
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    stem, layers, dim, heads = SHAPES[shape]
    began = time.perf_counter()
    results: dict = {
        "command": " ".join(["python", "benchmarks/bench_embed.py", *argv]),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "cases": [],
    }
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / f"{stem}.pt"
    done = subprocess.run(
        [sys.executable, __file__, "prepare", str(workdir), shape, str(args.seed)], check=True, capture_output=True
    )
    prepared = json.loads(done.stdout.decode().strip().splitlines()[-1])["written"]
    fasta = workdir / f"sequences_{args.sequences}_{args.min_length}-{args.max_length}_seed{args.seed}.fasta"
    lengths = write_fasta(fasta, args.sequences, args.min_length, args.max_length, args.seed)
    results["prepared"] = prepared
    results["prepare_minutes"] = (time.perf_counter() - began) / 60
    meta = json.loads((workdir / f"{stem}.json").read_text())
    results["settings"] = {
        "quick": args.quick, "layers": layers, "embed_dim": dim, "heads": heads, "parameters": meta["parameters"],
        "model_file": model.name, "sequences": args.sequences, "min_length": args.min_length,
        "max_length": args.max_length, "residues": sum(lengths.values()), "seed": args.seed,
        "shard_size": args.shard_size, "kill_at": args.kill_at,
    }  # fmt: skip

    if args.extract is None:
        raise SystemExit("--extract PATH is required: fair-esm v2.0.0's scripts/extract.py (git clone "
                         "https://github.com/facebookresearch/esm && git -C esm checkout v2.0.0)")  # fmt: skip
    data = args.extract.read_bytes()
    if git_blob_hash(data) != EXTRACT_BLOB:
        raise SystemExit(f"{args.extract} is not fair-esm v2.0.0's scripts/extract.py (git blob {EXTRACT_BLOB})")
    out, logs = workdir / "out", workdir / "logs"
    logs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        extract = Path(tmp) / "extract.py"
        extract.write_bytes(data)

        def embed_command(options: list[str], outdir: Path) -> list[str]:
            command = ["-m", "esmfold_lite.cli", "embed", str(fasta), "-o", str(outdir), "--model", str(model)]
            command += ["--layers", str(layers), "--max-tokens-per-batch", str(TOKENS_PER_BATCH), "--device", "cpu"]
            command += options
            return command + (["--shard-size", f"{args.shard_size:g}"] if "safetensors" in options else [])

        outputs = {}
        for name, (label, options) in CASES.items():
            if name not in args.cases:
                continue
            outdir = out / name
            shutil.rmtree(outdir, ignore_errors=True)
            if options is None:
                command = [str(extract), str(model), str(fasta), str(outdir), "--include", "mean", "per_tok"]
                command += ["--repr_layers", str(layers), "--toks_per_batch", str(TOKENS_PER_BATCH), "--nogpu"]
                env, marker, dtype = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, b" sequences\n", "float32"
            else:
                command, env, marker = embed_command(options, outdir), None, b"embed:"
                dtype = options[options.index("--dtype") + 1]
            print(f"running {name} ...", flush=True)
            row = case_row(name, label, dtype, run_command(name, command, logs, env), lengths, marker)
            row["command"] = shown_command(command, workdir, extract)
            results["cases"].append(row)
            if options is not None and "error" not in row:
                outputs[name] = (options[options.index("--format") + 1], outdir)

        if "resume" in args.cases:
            outdir = out / "resume"
            shutil.rmtree(outdir, ignore_errors=True)
            command = embed_command(CASES["safetensors"][1], outdir)
            target = -(-int(args.kill_at * args.sequences * 1000) // 1000)  # ceil, without float noise
            print(f"running resume (kill at {target} sequences) ...", flush=True)
            first = run_command("resume-killed", command, logs, kill_when=lambda: index_count(outdir) >= target)
            first.pop("chunks")
            resume: dict = {"killed_run": first, "done_at_kill": index_count(outdir), "target": target}
            if first.get("killed"):
                second = case_row("resume", "resumed run", "float32", run_command("resume", command, logs), lengths,
                                  b"embed:")  # fmt: skip
                second["command"] = shown_command(command, workdir, extract)
                resume["resumed_run"] = second
                results["cases"].append(second)
                resume["embedded_in_resumed_run"] = embedded_before((logs / "resume.log").read_text())
                if "error" in second:
                    resume["error"] = second["error"]
            elif "error" in first:
                resume["error"] = first["error"]
            if "error" not in resume:
                connection = sqlite3.connect(f"{(outdir / 'index.sqlite').as_uri()}?mode=ro", uri=True)
                ids = [id for (id,) in connection.execute("SELECT id FROM embeddings")]
                connection.close()
                resume.update(final_rows=len(ids), final_distinct=len(set(ids)), all_ids=sorted(ids) == sorted(lengths))
                outputs["resume"] = ("safetensors", outdir)
            whole = next((r for r in results["cases"] if r["case"] == "safetensors" and "error" not in r), None)
            resume["uninterrupted_seconds"] = whole and whole["seconds"]
            results["resume"] = resume

        reference = out / "fair-esm"
        if any(r["case"] == "fair-esm" and "error" not in r for r in results["cases"]):
            print("comparing the outputs ...", flush=True)
            diffs = compare(list(lengths), layers, outputs, reference)
            for row in results["cases"]:
                if row["case"] in diffs:
                    row["diff"] = diffs[row["case"]]
            results["reference_mean_max_abs"] = next(iter(diffs.values()))["reference_mean_max_abs"] if diffs else None
        if "resume" in results and "safetensors" in outputs and "resume" in outputs:
            results["resume"]["diff_to_uninterrupted"] = mean_difference(
                outputs["safetensors"][1], outputs["resume"][1], list(lengths), layers
            )
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    results["total_minutes"] = (time.perf_counter() - began) / 60
    write_report(results)
    print(f"done in {results['total_minutes']:.1f} min; wrote {README} and {RESULTS}/embed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
