"""``esmfold-lite predict``: fold the proteins of a FASTA file into structure and confidence files."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import torch

from esmfold_lite.cli import EXIT_SOME_FAILED, CliError, add_logging_options
from esmfold_lite.pipeline import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_TOKENS_PER_BATCH,
    FORMATS,
    SUMMARY_NAME,
    PipelineError,
    predict_fasta,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

DESCRIPTION = f"""\
Fold every record of a FASTA file with ESMFold. Per protein, OUTDIR/<id>.<format> is written for each of
--formats; OUTDIR/{SUMMARY_NAME} has one row per protein: id, length, mean_plddt, ptm, status (ok / error /
pending), seconds, error, notes (what out-of-memory recovery was needed), sequence_hash.

Records: ':' separates the chains of a complex (A:B). Lower case, a trailing '*', blank lines and CRLF are
accepted; a record that is empty, holds letters that are not amino acids, or is longer than --max-length gets
status=error with the reason, and the others still fold. File names are the record ids made safe for every file
system (duplicates get _2, _3, ...); nothing is written outside OUTDIR.

Re-running the same command resumes: proteins whose summary row says ok (for the same sequence) and whose files
all exist are skipped, all others are folded again. Files are written atomically, so an interrupted run leaves
no truncated file. Two runs must not write to the same OUTDIR at the same time."""

EPILOG = f"""\
out of memory: a batch is split, then the chunk size lowered (512, 128, 32, 8), then, with --cpu-fallback,
the protein and all longer ones are folded on the CPU.

exit status: 0 all proteins ok; {EXIT_SOME_FAILED} some proteins failed (see {SUMMARY_NAME});
1 nothing could run (unreadable or empty FASTA, unusable OUTDIR, model not loadable); 130/143 interrupted."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _chunk_size(text: str) -> int | str:
    return "auto" if text.lower() == "auto" else _positive_int(text)


def _formats(text: str) -> tuple[str, ...]:
    names = [{"mmcif": "cif"}.get(name, name) for name in text.lower().replace(" ", "").split(",") if name]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or text!r}; choose from {FORMATS}")
    return tuple(dict.fromkeys(names))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="fold the proteins of a FASTA file (PDB, mmCIF, confidence JSON/NPZ/PNG)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("fasta", metavar="INPUT.fasta", type=Path, help="FASTA file (may be gzip-compressed)")
    parser.add_argument(
        "-o", "--output-dir", dest="outdir", metavar="OUTDIR", type=Path, required=True,
        help="output directory (created if missing)",
    )  # fmt: skip
    parser.add_argument(
        "--model",
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
        "B-factor, ColabFold-like JSON (plddt, mean_plddt, ptm, pae, max_pae), NPZ of all arrays, PNG plot of "
        f"pLDDT and PAE (default: {','.join(DEFAULT_FORMATS)})",
    )
    parser.add_argument(
        "--num-recycles",
        metavar="N",
        type=_non_negative_int,
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
        type=_positive_int,
        default=DEFAULT_MAX_TOKENS_PER_BATCH,
        help="sequences are sorted by length and batched while count x longest (linkers included) <= N; a longer "
        f"sequence folds alone (default: {DEFAULT_MAX_TOKENS_PER_BATCH})",
    )
    parser.add_argument(
        "--max-length",
        metavar="N",
        type=_positive_int,
        help="reject records with more residues (over all chains) with status=error (default: no limit)",
    )
    parser.add_argument("--device", metavar="D", help="torch device: cuda, cuda:1, cpu, mps (default: cuda if present)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="model precision (default: the loader's choice)")
    parser.add_argument(
        "--cpu-offload", action="store_true", help="keep the language model in CPU memory, to fit a smaller GPU"
    )
    parser.add_argument(
        "--cpu-fallback",
        action="store_true",
        help="fold proteins that do not fit in GPU memory even with the smallest chunk size on the CPU (slow)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute proteins whose outputs are complete instead of skipping"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    add_logging_options(parser)
    parser.set_defaults(func=run)


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


def run(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so the atomic writers remove their temporary files on the way out.
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = predict_fasta(
            args.fasta,
            args.outdir,
            model_source=args.model,
            lm=args.lm,
            device=args.device,
            dtype=DTYPES[args.dtype] if args.dtype else None,
            cpu_offload=args.cpu_offload,
            formats=args.formats,
            num_recycles=args.num_recycles,
            chunk_size=args.chunk_size,
            max_tokens_per_batch=args.max_tokens_per_batch,
            max_length=args.max_length,
            cpu_fallback=args.cpu_fallback,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except PipelineError as exc:
        raise CliError(str(exc)) from exc
    except _Interrupted as exc:
        logger.warning("interrupted; finished proteins are kept, run the same command again to resume")
        return 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [r for r in results if r.status != "ok"]
    if failed:
        logger.warning("%d of %d proteins failed; see %s", len(failed), len(results), args.outdir / SUMMARY_NAME)
        return EXIT_SOME_FAILED
    return 0
