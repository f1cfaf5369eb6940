"""``esmfold-lite evaluate``: Cα RMSD, TM-score and lDDT of a predicted structure against a reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esmfold_lite.cli import CliError, add_logging_options, choice_of, exit_status_help
from esmfold_lite.io.atomic import atomic_write_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a predicted structure against a reference (RMSD, TM-score, lDDT)",
        description=(
            "Compare PRED with REF on their Cα atoms: RMSD after superposition, TM-score (normalised by the "
            "reference length) and lDDT. Files: PDB, mmCIF or BinaryCIF, optionally .gz; first model. Chains pair "
            "by equal ids, else in order; residues match by number, or by sequence alignment with --match sequence."
        ),
        epilog=exit_status_help(
            ok="scores computed",
            failed="nothing could run (missing or unreadable structure, no residues to pair, bad --chains, "
            "--json not writable)",
        ),
    )
    parser.add_argument("pred", metavar="PRED", type=Path, help="predicted structure")
    parser.add_argument("ref", metavar="REF", type=Path, help="reference (e.g. experimental) structure")
    parser.add_argument("--json", metavar="OUT", type=Path, default=None, help="also write the scores as JSON to OUT")
    parser.add_argument(
        "--match",
        metavar="MODE",
        type=choice_of("esmfold_lite.evaluate", "MATCH_MODES", "mode"),
        default="number",
        help="number: match residues by residue number (default); sequence: by sequence alignment (for renumbered "
        "references)",
    )
    parser.add_argument(
        "--chains",
        metavar="MAP",
        default=None,
        help="pair chains explicitly, prediction=reference, comma-separated (e.g. A=H,B=L); others are skipped "
        "(default: equal chain ids where one structure's ids are all in the other, else in order of appearance when "
        "both have as many chains)",
    )
    add_logging_options(parser)
    parser.set_defaults(func=run)


def _parse_chain_map(text: str) -> dict[str, str]:
    chain_map = {}
    for item in text.split(","):
        pred, sep, ref = item.partition("=")
        if not (sep and pred.strip() and ref.strip()):
            raise CliError(f"--chains: {item!r} is not PRED=REF; write e.g. --chains A=H,B=L")
        chain_map[pred.strip()] = ref.strip()
    return chain_map


def format_table(scores: dict) -> str:
    """The scores as a short two-column text table."""
    rows = [
        ("prediction", scores["pred"]),
        ("reference", scores["ref"]),
        ("chains", ", ".join(f"{p}->{r}" for p, r in scores["chains"].items())),
        ("matched by", scores["match"]),
        (
            "aligned residues",
            f"{scores['aligned_residues']} (prediction {scores['pred_residues']}, reference {scores['ref_residues']})",
        ),
        ("sequence identity", f"{scores['sequence_identity']:.3f}"),
        ("Cα RMSD (Å)", f"{scores['rmsd']:.3f}"),
        ("TM-score", f"{scores['tm_score']:.4f}"),
        ("lDDT (Cα)", f"{scores['lddt']:.4f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.evaluate import evaluate_structures

    for path in (args.pred, args.ref):
        if not path.is_file():
            raise CliError(
                f"{path} is a directory, not a structure file" if path.is_dir() else f"structure file not found: {path}"
            )
    chain_map = _parse_chain_map(args.chains) if args.chains else None
    try:
        scores = evaluate_structures(args.pred, args.ref, match=args.match, chain_map=chain_map)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(format_table(scores))
    if args.json is not None:
        try:
            atomic_write_text(args.json, json.dumps(scores, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return 0
