"""``esmfold-lite embed``: language-model embeddings of a FASTA file, one file per sequence plus a manifest."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from esmfold_lite.cli import CliError, add_logging_options, exit_status_help, records_exit_code
from esmfold_lite.io.atomic import atomic_path, atomic_write_text
from esmfold_lite.io.fasta import FastaRecord, read_fasta, unique_ids, validate_record
from esmfold_lite.lm.embed import Embeddings, embed, resolve_layer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SEQUENCES_PER_CHUNK = 256  # results are written and freed after every chunk of records


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed sequences with an ESM language model",
        description=(
            "Embed every sequence of a FASTA file with an ESM language model. Writes one file per sequence into "
            "OUTDIR, named after its FASTA id made filesystem-safe (duplicates get _2, _3, ...), and "
            "OUTDIR/manifest.tsv listing id, file, length and status per record. Records that are not one chain "
            "of amino-acid letters are skipped with a warning (status 'skipped: reason') and the others still run. "
            "Each file holds 'label' (the FASTA id), 'sequence', "
            "'representations' (per residue, L x D, without <cls>/<eos>), 'mean_representations' (D), "
            "'bos_representations' (the <cls> vector, D) per layer, keyed by absolute layer number "
            "(-1 is saved under the model's last layer), and 'contacts' (L x L) with --contacts. "
            "npz files flatten these to keys like 'representations_33'. Values are saved as float32."
        ),
        epilog=exit_status_help(
            ok="every record embedded",
            some_failed="some records skipped (their reason is in manifest.tsv and the log)",
            failed="nothing could run (unreadable FASTA, no valid record, model not loadable)",
        ),
    )
    parser.add_argument("input", metavar="IN.fasta", type=Path, help="FASTA file of protein sequences")
    parser.add_argument(
        "-o", "--output-dir", metavar="OUTDIR", type=Path, required=True, help="output directory (created if missing)"
    )
    parser.add_argument(
        "--model",
        metavar="SOURCE",
        required=True,
        help="language model: a registry name (e.g. esm2_t33_650M_UR50D), a fair-esm .pt checkpoint, a "
        "transformers model folder, or a model file written by esmfold-lite",
    )
    parser.add_argument(
        "--layers",
        metavar="N",
        type=int,
        nargs="+",
        default=[-1],
        help="layers to save: 0 = token embeddings, 1..num_layers = after that block (the last one after the final "
        "LayerNorm); negative values count from the end, -1 = last; put IN.fasta before this flag (default: -1)",
    )
    parser.add_argument(
        "--format", choices=("pt", "npz"), default="pt", help="file format: torch.save dict or numpy .npz (default: pt)"
    )
    parser.add_argument("--contacts", action="store_true", help="also save predicted contact probabilities (L x L)")
    parser.add_argument(
        "--max-tokens-per-batch",
        metavar="N",
        type=int,
        default=4096,
        help="token budget of one forward pass: sequences are sorted by length and packed while "
        "count x (longest + 2) <= N; a longer sequence runs alone (default: 4096)",
    )
    parser.add_argument(
        "--device", metavar="D", default=None, help="torch device: cpu, cuda, cuda:1 (default: the loader's choice)"
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="model precision (default: as the loader chooses)"
    )
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.lm.load import load_language_model

    if not args.input.is_file():
        raise CliError(f"input file {args.input} does not exist; give a FASTA file")
    if args.max_tokens_per_batch < 1:
        raise CliError("--max-tokens-per-batch must be a positive number of tokens")
    try:
        records = list(read_fasta(args.input))
    except OSError as exc:
        raise CliError(f"cannot read {args.input}: {exc}") from exc
    if not records:
        raise CliError(f"{args.input} holds no FASTA records")
    problems = [record_problem(record) for record in records]
    if all(problems):
        raise CliError(f"no valid sequence in {args.input}; first problem (line {records[0].line}): {problems[0]}")

    try:
        model = load_language_model(args.model, device=args.device, dtype=DTYPES.get(args.dtype))
        saved_layers = {layer: resolve_layer(layer, model.num_layers) for layer in dict.fromkeys(args.layers)}
    except (OSError, ValueError) as exc:  # checkpoint and download errors name the source and the fix
        raise CliError(str(exc)) from exc

    args.output_dir.mkdir(parents=True, exist_ok=True)
    names = unique_ids(record.id for record in records)
    manifest: list[tuple[str, str, int, str]] = []  # id, file, length, status; "ok" rows replace these once written
    for record, problem in zip(records, problems, strict=True):
        manifest.append((record.id, "", record.num_residues, f"skipped: {problem}"))
        if problem:
            log.warning("skipping record %r (line %d): %s", record.id, record.line, problem)
    valid = [i for i, problem in enumerate(problems) if not problem]
    with tqdm(total=len(valid), unit="seq", desc="embed", disable=getattr(args, "quiet", False)) as bar:
        for start in range(0, len(valid), SEQUENCES_PER_CHUNK):
            chunk = valid[start : start + SEQUENCES_PER_CHUNK]
            out = embed(
                model,
                [records[i].sequence for i in chunk],
                layers=list(saved_layers),
                contacts=args.contacts,
                max_tokens_per_batch=args.max_tokens_per_batch,
            )
            for row, i in enumerate(chunk):
                filename = f"{names[i]}.{args.format}"
                write_result(
                    args.output_dir / filename, records[i], sequence_result(out, row, saved_layers), args.format
                )
                manifest[i] = (records[i].id, filename, records[i].num_residues, "ok")
            bar.update(len(chunk))

    write_manifest(args.output_dir / "manifest.tsv", manifest)
    return records_exit_code(len(records) - len(valid))


def record_problem(record: FastaRecord) -> str | None:
    """Why a record cannot be embedded, or None: FASTA validation, then one chain per record."""
    problem = validate_record(record)
    if problem is None and len(record.chains) > 1:
        problem = f"{len(record.chains)} chains separated by ':'; embed takes one chain per record"
    return problem


def sequence_result(out: Embeddings, i: int, saved_layers: dict[int, int]) -> dict:
    """Sequence ``i``'s tensors (float32, CPU) in fair-esm ``extract.py`` naming, keyed by absolute layer."""
    result = {
        name: {absolute: rows[layer][i].float().cpu() for layer, absolute in saved_layers.items()}
        for name, rows in (
            ("representations", out.representations),
            ("mean_representations", out.mean),
            ("bos_representations", out.cls),
        )
    }
    if out.contacts is not None:
        result["contacts"] = out.contacts[i].float().cpu()
    return result


def write_result(path: Path, record: FastaRecord, arrays: dict, file_format: str) -> None:
    """Write one record's result atomically: a ``torch.save`` dict, or an ``.npz`` with flat keys."""
    with atomic_path(path) as temp:
        if file_format == "pt":
            torch.save({"label": record.id, "sequence": record.sequence, **arrays}, temp)
        else:
            flat = {"label": np.array(record.id), "sequence": np.array(record.sequence)}
            for name, value in arrays.items():
                if isinstance(value, dict):
                    flat.update({f"{name}_{layer}": tensor.numpy() for layer, tensor in value.items()})
                else:
                    flat[name] = value.numpy()
            np.savez(temp, **flat)


def write_manifest(path: Path, rows: list[tuple[str, str, int, str]]) -> None:
    """``id file length status`` per record, tab-separated, in input order."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(("id", "file", "length", "status"))
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
