"""``esmfold-lite report``: one self-contained HTML file for a finished predict run."""

from __future__ import annotations

import argparse
from pathlib import Path

from esmfold_lite.cli import EXIT_OK, CliError, add_logging_options, exit_status_help, positive_int
from esmfold_lite.pipeline.names import REPORT_NAME, REPORT_PARALLEL_FROM


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="HTML report of a predict run: table of all proteins, 3D views, pLDDT and PAE plots",
        description=(
            "Write one self-contained HTML file for the predict run in OUTDIR: a sortable table of every protein "
            "(id, length, mean pLDDT, pTM, status, error) and per protein a 3D view coloured by pLDDT (made when it "
            "scrolls into view) and its pLDDT and PAE plots. Structures and plots are embedded in the file; it reads "
            "OUTDIR/summary.tsv and what exists of each protein's .pdb/.cif and .json/.npz (without those, pLDDT "
            "comes from the structure's B-factors and the PAE from <id>_predicted_aligned_error_v1.json)."
        ),
        epilog=exit_status_help(
            ok="report written", failed="nothing to report (no summary.tsv) or the file cannot be written"
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", type=Path, help="output directory of esmfold-lite predict")
    parser.add_argument(
        "-o", "--output", metavar="HTML", type=Path, default=None,
        help=f"where to write the report (default: OUTDIR/{REPORT_NAME})",
    )  # fmt: skip
    parser.add_argument(
        "--3dmol-js", dest="threedmol_js", metavar="PATH", type=Path, default=None,
        help="embed this 3Dmol.js (e.g. node_modules/3dmol/build/3Dmol-min.js from `npm install 3dmol`) so the report "
        "opens with no network (default: load it from the CDN build that py3Dmol uses, e.g. "
        "https://cdn.jsdelivr.net/npm/3dmol@2.5.5/build/3Dmol-min.js)",
    )  # fmt: skip
    parser.add_argument(
        "-j", "--jobs", metavar="N", type=positive_int, default=None,
        help=f"processes reading and plotting the proteins of runs of {REPORT_PARALLEL_FROM} or more "
        "(default: all CPUs available)",
    )  # fmt: skip
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.viz.report import ReportError, write_report

    try:
        path = write_report(args.outdir, args.output, args.threedmol_js, jobs=args.jobs)
    except ReportError as exc:
        raise CliError(str(exc)) from None
    print(path)
    return EXIT_OK
