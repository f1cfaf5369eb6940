"""``esmfold-lite fold-proteome``: fold a whole proteome on Ray workers (a laptop, a multi-GPU box or a cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path

from esmfold_lite.cli import exit_status_help, non_negative_float, positive_float, positive_int
from esmfold_lite.commands.predict import INTERRUPTED, add_folding_arguments, exit_status, folding_options
from esmfold_lite.pipeline.names import DEFAULT_MAX_ATTEMPTS, DEFAULT_STALL_TIMEOUT_S, RUN_REPORT_NAME, SUMMARY_NAME

DESCRIPTION = f"""\
Fold every record of a (large, possibly gzip-compressed) FASTA file on Ray workers, each holding the model once.
The outputs are those of `esmfold-lite predict`: OUTDIR/<id>.<format> per protein, OUTDIR/{SUMMARY_NAME} (one row
per protein, also pending ones) and OUTDIR/{RUN_REPORT_NAME} (counts, proteins/s, residues/s, ETA, failures,
workers; rewritten every few seconds).

The FASTA is read as a stream: records to fold wait in a queue on disk (OUTDIR/.esmfold-lite/queue.sqlite), sorted
by length and cut into units of at most --max-tokens-per-batch padded positions, longest first. A worker that dies
(killed, out of host memory, its node lost) is replaced and its units are split and retried on the others; a
protein whose worker died --max-attempts times is marked failed with the reason. Only the driver (this command)
writes, each protein's files once and then its completion record, so a driver killed and started again resumes
and recomputes nothing that is complete. Settings, resume, --overwrite and the OUTDIR lock work as for predict.

Ray: without --ray-address a Ray instance is started on this machine (using its GPUs if any); `--ray-address auto`
joins the cluster this machine is part of (`ray start --head` / `ray start --address=HEAD:6379`), and
`ray://HEAD:10001` connects through Ray Client. Workers need the checkpoint at the same path (or a registry name,
fetched into each node's cache); they return the files to the driver, so they need no shared file system.
Requires the cluster extra: pip install 'esmfold-lite[cluster]'."""

EPILOG = f"""\
examples:
  esmfold-lite fold-proteome UP000005640_9606.fasta.gz -o human --model esmfold_v1            # this machine
  esmfold-lite fold-proteome proteome.fasta -o out --model esmfold_v1 --ray-address auto --gpus-per-worker 1

{exit_status_help(
    ok="all proteins ok",
    some_failed=f"some proteins failed (see {SUMMARY_NAME})",
    failed="nothing could run or the run had to stop (unreadable FASTA, unusable or busy OUTDIR, other settings in "
    "OUTDIR, a damaged run state, model not loadable on the workers, no Ray, a full or failing disk: run the same "
    "command again to resume)",
    interrupted="interrupted (SIGINT/SIGTERM: finished proteins are kept, the same command resumes)",
    width=116,
)}"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fold-proteome",
        help="fold a proteome on Ray workers (local, multi-GPU or a cluster), resumable",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("fasta", metavar="PROTEOME.fasta", type=Path, help="FASTA file (may be gzip-compressed)")
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray to use: auto (the cluster this machine joined), HOST:PORT of a head node, or ray://HEAD:10001 "
        "(Ray Client); default: start Ray on this machine",
    )
    parser.add_argument(
        "--workers", metavar="N", type=positive_int,
        help="model-holding workers (default: one per GPU of the cluster, else one on the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--gpus-per-worker", metavar="G", type=non_negative_float,
        help="GPUs per worker, e.g. 0.5 for two workers per GPU; 0 folds on the CPU (default: 1 if the cluster has "
        "GPUs, else 0)",
    )  # fmt: skip
    parser.add_argument(
        "--cpus-per-worker", metavar="C", type=positive_float,
        help="CPUs reserved per worker, also its torch threads (default: 1 with GPUs, else the CPUs of a node shared "
        "by the workers)",
    )  # fmt: skip
    parser.add_argument(
        "--max-attempts", metavar="N", type=positive_int, default=DEFAULT_MAX_ATTEMPTS,
        help="a protein whose worker died this many times is marked failed with the reason "
        f"(default: {DEFAULT_MAX_ATTEMPTS})",
    )  # fmt: skip
    parser.add_argument(
        "--stall-timeout", metavar="SECONDS", type=positive_float, default=DEFAULT_STALL_TIMEOUT_S,
        help="after Ray lost a node, stop (exit status 1, naming the lost nodes; the same command resumes) when no "
        "worker could be scheduled for this long; a Ray started here that dies is started again once instead "
        f"(default: {DEFAULT_STALL_TIMEOUT_S:.0f})",
    )  # fmt: skip
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="also start Ray's dashboard (http://127.0.0.1:8265) with the Ray started here; off by default, because "
        "its jobs API runs code for whoever reaches it (the Ray started here listens on 127.0.0.1 only)",
    )
    add_folding_arguments(parser)
    parser.set_defaults(func=run, interrupted=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.pipeline.proteome import fold_proteome

    report = fold_proteome(
        args.fasta,
        args.outdir,
        ray_address=args.ray_address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        max_attempts=args.max_attempts,
        dashboard=args.dashboard,
        stall_timeout=args.stall_timeout,
        options=folding_options(args),
    )
    proteins = report["proteins"]
    return exit_status(proteins["failed"], proteins["total"], args.outdir)
