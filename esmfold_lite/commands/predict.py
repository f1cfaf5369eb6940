"""``esmfold-lite predict``: fold the proteins of a FASTA file into structure and confidence files."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from esmfold_lite.cli import (
    EXIT_SOME_FAILED,
    add_logging_options,
    dtype_name,
    exit_status_help,
    non_negative_int,
    positive_int,
    torch_device,
)
from esmfold_lite.pipeline.names import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_TOKENS_PER_BATCH,
    FORMATS,
    RUN_REPORT_NAME,
    SUMMARY_NAME,
)
from esmfold_lite.pipeline.options import FoldingOptions, checked_formats

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")

DESCRIPTION = f"""\
Fold every record of a FASTA file with ESMFold. Per protein, OUTDIR/<id>.<format> is written for each of
--formats; OUTDIR/{SUMMARY_NAME} has one row per protein: id, length, mean_plddt, ptm, status (ok / error /
pending / stale), seconds, error, notes (renames, residues folded as unknown, out-of-memory recovery),
sequence_hash, header (the FASTA header line; text escaped: \\t \\n \\r \\0 \\\\ \\xNN);
OUTDIR/{RUN_REPORT_NAME} the run's counts, rates and settings. The options of fair-esm's esm-fold (-i, -o,
--num-recycles, --max-tokens-per-batch, --chunk-size, --cpu-only, --cpu-offload) work the same here.

Records: ':' separates the chains of a complex (A:B). Lower case, a trailing '*', blank lines and CRLF are
accepted; a record that is empty, holds letters that are not amino acids, or is longer than --max-length gets
status=error with the reason, and the others still fold. File names are the record ids made safe for every file
system (duplicates get _2, _3, ..., with a warning); nothing is written outside OUTDIR.

Re-running the same command resumes. OUTDIR/.esmfold-lite/ records the settings that made the results (checkpoint
and LM fingerprints, --num-recycles, --dtype, --lm-dtype as given, the esmfold-lite version) and, per protein, a
completion record written after its files (their sizes, times and SHA-256): a protein is skipped only if its record
holds for the same sequence and settings and all its files are still intact; a missing, truncated or edited file is
folded again.
A run with other settings than the results in OUTDIR stops with an error: add --overwrite to recompute them, or
use a new OUTDIR. Files are written atomically (a symlink in OUTDIR is replaced, never written through), so an
interrupted run leaves no partial file. One run per OUTDIR: a second run on a busy OUTDIR stops at once; the lock
of a killed run is free again. A run that fails before writing anything removes the OUTDIR it created.
A full or failing disk stops the run with a message naming the file (exit status 1); the proteins finished are
kept, and the same command run again folds the rest. A damaged OUTDIR/.esmfold-lite/state.sqlite stops a run before
it folds anything: --overwrite replaces it (and folds every protein again), or use a new OUTDIR.

When stderr is not a terminal (nohup, cluster logs), one line per protein (id, length, mean pLDDT, pTM, seconds)
and a final line with the totals are logged instead of the progress bar."""

EPILOG = f"""\
out of memory: a batch is split, then the chunk size lowered (512, 128, 32, 8), then, with --cpu-fallback,
the protein and all longer ones are folded on the CPU.

{exit_status_help(
    ok="all proteins ok",
    some_failed=f"some proteins failed (see {SUMMARY_NAME})",
    failed="nothing could run or the run had to stop (unreadable or empty FASTA, unusable or busy OUTDIR, results "
    "of other settings in OUTDIR, a damaged run state, model not loadable, a full or failing disk)",
    interrupted="interrupted (SIGINT/SIGTERM: finished proteins are kept, the same command resumes)",
    width=116,
)}"""
INTERRUPTED = "interrupted; finished proteins are kept, run the same command again to resume"


def _chunk_size(text: str) -> int | str:
    return "auto" if text.lower() == "auto" else positive_int(text)


def _formats(text: str) -> tuple[str, ...]:
    names = [{"mmcif": "cif"}.get(name, name) for name in text.lower().replace(" ", "").split(",") if name]
    try:
        return checked_formats(dict.fromkeys(names))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_folding_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``predict`` and ``fold-proteome`` share: model, outputs, folding, resume, logging."""
    parser.add_argument(
        "-o", "--output-dir", dest="outdir", metavar="OUTDIR", type=Path, required=True,
        help="output directory (created if missing)",
    )  # fmt: skip
    parser.add_argument(
        "--model",
        dest="model_source",
        metavar="SOURCE",
        required=True,
        help="ESMFold weights: a registry name (esmfold_v1), a fair-esm checkpoint (esmfold_3B_v1.pt), a "
        "transformers model folder, or a model written by esmfold-lite",
    )
    parser.add_argument(
        "--lm",
        metavar="PATH",
        help="ESM-2 language model for a fair-esm ESMFold checkpoint, which does not contain it "
        "(default: esm2_t36_3B_UR50D.pt beside the checkpoint, or the registry's)",
    )
    parser.add_argument(
        "--formats",
        metavar="LIST",
        type=_formats,
        default=DEFAULT_FORMATS,
        help=f"comma-separated output files per protein, from {', '.join(FORMATS)}: PDB and mmCIF with pLDDT as "
        "B-factor (the mmCIF also with ModelCIF scores: pLDDT per residue, mean pLDDT, pTM), ColabFold-like JSON "
        "(plddt, mean_plddt, ptm, pae, max_pae), PAE as AlphaFold DB writes it (<id>_predicted_aligned_error_v1.json: "
        "integer Å, max_predicted_aligned_error), NPZ of all arrays, PNG plot of pLDDT and PAE; pLDDT is 0-100 "
        f"everywhere, PAE in Å (default: {','.join(DEFAULT_FORMATS)})",
    )
    parser.add_argument(
        "--num-recycles",
        metavar="N",
        type=non_negative_int,
        help="recycling iterations: N+1 trunk passes (default: the checkpoint's, 3 for esmfold_v1)",
    )
    parser.add_argument(
        "--chunk-size",
        metavar="auto|N",
        type=_chunk_size,
        default="auto",
        help="chunk size of the trunk's axial attention (smaller needs less memory, runs slower); auto picks it "
        "from free memory and sequence length, and it is lowered further when memory runs out (default: auto)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS_PER_BATCH,
        help="sequences are sorted by length and batched while count x longest (linkers included) <= N; a longer "
        f"sequence folds alone (default: {DEFAULT_MAX_TOKENS_PER_BATCH})",
    )
    parser.add_argument(
        "--max-length",
        metavar="N",
        type=positive_int,
        help="reject records with more residues (over all chains) with status=error (default: no limit)",
    )
    parser.add_argument(
        "--dtype",
        type=dtype_name,
        choices=DTYPE_CHOICES,
        default="auto",
        help="precision of the trunk, structure module and heads; auto picks the fastest dtypes that stay as close "
        "to fp32 as fp32 is to the reference (a GPU: language model float16, trunk float32, as the original; a CPU "
        "with AVX-512: language model float16 (as fast as fp32, 5.7 GB less memory), trunk float32; other CPUs: "
        "float32) and logs its choice; bfloat16 is about 2x faster on a CPU with AMX but moves coordinates by "
        "several Å on a randomized model (default: auto)",
    )
    parser.add_argument(
        "--lm-dtype",
        type=dtype_name,
        choices=DTYPE_CHOICES,
        help="precision of the ESM-2 language model alone (default: auto with --dtype auto; otherwise float16 on a "
        "GPU, as the original, and float32 on a CPU); float16 and bfloat16 work on the CPU too",
    )
    parser.add_argument(
        "--cpu-offload", action="store_true", help="keep the language model in CPU memory, to fit a smaller GPU"
    )
    parser.add_argument(
        "--cpu-fallback",
        action="store_true",
        help="fold proteins that do not fit in GPU memory even with the smallest chunk size on the CPU (slow)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute proteins whose outputs are complete instead of skipping them; needed to fold into an OUTDIR "
        "whose results were made with other settings (model, LM, --num-recycles, --dtype, --lm-dtype, version) or "
        "whose run state (.esmfold-lite/state.sqlite) is damaged, which it replaces",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar (it shows only on a terminal)"
    )
    add_logging_options(parser)


def folding_options(args: argparse.Namespace) -> FoldingOptions:
    """The ``FoldingOptions`` that ``add_folding_arguments`` gives: each flag's destination is the option's name."""
    return FoldingOptions(**{option.name: getattr(args, option.name) for option in dataclasses.fields(FoldingOptions)})


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="fold the proteins of a FASTA file (PDB, mmCIF, confidence JSON/NPZ/PNG)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "fasta", metavar="INPUT.fasta", type=Path, nargs="?", help="FASTA file (may be gzip-compressed); or -i"
    )
    parser.add_argument(
        "-i", "--input", dest="input", metavar="FASTA", type=Path,
        help="the FASTA file, as fair-esm's esm-fold takes it (instead of the positional INPUT.fasta)",
    )  # fmt: skip
    parser.add_argument(
        "--device", metavar="D", type=torch_device,
        help="torch device: cuda, cuda:1, cpu, mps (default: cuda if present)",
    )  # fmt: skip
    parser.add_argument("--cpu-only", action="store_true", help="fold on the CPU only (the same as --device cpu)")
    add_folding_arguments(parser)
    parser.set_defaults(func=run, interrupted=INTERRUPTED)


def input_and_device(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The FASTA (positional or -i) and the device (--device or --cpu-only); usage errors exit with status 2."""
    if args.fasta is not None and args.input is not None and args.fasta != args.input:
        args.parser.error(f"two inputs given: {args.fasta} and -i {args.input}; give one")
    fasta = args.fasta if args.fasta is not None else args.input
    if fasta is None:
        args.parser.error("the FASTA file is required: give it as INPUT.fasta or with -i")
    if args.cpu_only and args.device not in (None, "cpu"):
        args.parser.error(f"--cpu-only contradicts --device {args.device}")
    return fasta, "cpu" if args.cpu_only else args.device


def exit_status(failed: int, total: int, outdir: Path) -> int:
    """0 when every protein is ok, else ``EXIT_SOME_FAILED`` with a warning."""
    if failed:
        logger.warning("%d of %d proteins failed; see %s", failed, total, outdir / SUMMARY_NAME)
        return EXIT_SOME_FAILED
    return 0


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.pipeline import predict_fasta

    fasta, device = input_and_device(args)
    results = predict_fasta(fasta, args.outdir, options=folding_options(args), device=device)
    return exit_status(sum(r.status != "ok" for r in results), len(results), args.outdir)
