"""``esmfold-lite embed``: language-model embeddings of FASTA records (or MSAs), one file per input plus a manifest.

Every file is written atomically; a file that cannot be written (a full or failing disk, an unwritable OUTDIR)
stops the command with one line naming it (exit status 1), leaving no partial file, and no manifest is written for
that run (an earlier run's manifest stays as it was).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from esmfold_lite.alphabet import ALL_TOKENS
from esmfold_lite.cli import CliError, add_logging_options, exit_status_help, records_exit_code
from esmfold_lite.io.atomic import atomic_write_bytes, atomic_write_text, is_disk_error, write_failure
from esmfold_lite.io.fasta import FastaRecord, read_fasta, resolve_inside, unique_ids, validate_record
from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH, MSA, SELECTIONS, read_msa, select_rows
from esmfold_lite.io.outputs import contact_map_png
from esmfold_lite.lm.embed import Embeddings, embed, resolve_layer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SEQUENCES_PER_CHUNK = 256  # results are written and freed after every chunk of records
CONTACTS_PNG_SUFFIX = ".contacts.png"


@dataclass
class EmbedInput:
    """One thing to embed: a FASTA record (``msa`` None) or an MSA file's alignment; ``problem`` if it cannot be."""

    id: str
    sequence: str
    length: int
    where: str
    problem: str | None = None
    msa: MSA | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed sequences (or MSAs) with an ESM language model",
        description=(
            "Embed every sequence of the FASTA file(s) with an ESM language model (ESM-2, ESM-1b, ESM-1v), or, for "
            "the MSA Transformer, the query (first row) of every MSA file (a3m, a2m or aligned FASTA, one MSA per "
            "file: lower-case letters and '.' in a3m/a2m are insertions and removed, '-' is a gap, columns where the "
            "query has a gap are dropped). Writes one file per record/MSA into OUTDIR, named after its FASTA id "
            "(the query's id for an MSA) made filesystem-safe (duplicates get _2, _3, ...), and OUTDIR/manifest.tsv "
            "listing id, file, length and status per input. Inputs that cannot be embedded (not one chain of "
            "amino-acid letters, longer than the model allows (ESM-1b/1v: 1022 residues), a misaligned MSA) are "
            "skipped with a warning (status 'skipped: reason'). Each file holds 'label' (the id), 'sequence', "
            "'representations' (per residue, L x D, without <cls>/<eos>), 'mean_representations' (D), "
            "'bos_representations' (the <cls> vector, D) per layer, keyed by absolute layer number "
            "(-1 is saved under the model's last layer), 'contacts' (L x L) with --contacts, 'logits' (L x 33) with "
            "--logits and, for an MSA, 'msa_depth' (rows used). npz files flatten these to keys like "
            "'representations_33'. Values are saved as float32."
        ),
        epilog=exit_status_help(
            ok="every record embedded",
            some_failed="some records skipped (their reason is in manifest.tsv and the log)",
            failed="nothing could run or the run had to stop (unreadable FASTA, no valid record, model not loadable, "
            "an output that cannot be written: a full or failing disk)",
        ),
    )
    parser.add_argument(
        "input",
        metavar="IN",
        type=Path,
        nargs="+",
        help="FASTA file(s) of protein sequences; for the MSA Transformer, one MSA file (a3m/a2m/aligned FASTA, "
        "query first) per MSA",
    )
    parser.add_argument(
        "-o", "--output-dir", metavar="OUTDIR", type=Path, required=True, help="output directory (created if missing)"
    )
    parser.add_argument(
        "--model",
        metavar="SOURCE",
        required=True,
        help="language model: a registry name (esm2_t33_650M_UR50D, esm1b_t33_650M_UR50S, esm1v_t33_650M_UR90S_1, "
        "esm_msa1b_t12_100M_UR50S, ...), a fair-esm .pt checkpoint, a transformers model folder, or a model file "
        "written by esmfold-lite",
    )
    parser.add_argument(
        "--layers",
        metavar="N",
        type=int,
        nargs="+",
        default=[-1],
        help="layers to save: 0 = token embeddings, 1..num_layers = after that block (the last one after the final "
        "LayerNorm); negative values count from the end, -1 = last; put the inputs before this flag (default: -1)",
    )
    parser.add_argument(
        "--format", choices=("pt", "npz"), default="pt", help="file format: torch.save dict or numpy .npz (default: pt)"
    )
    parser.add_argument(
        "--contacts",
        action="store_true",
        help="also save predicted contact probabilities (L x L); ESM-2, ESM-1b and the MSA Transformer (ESM-1v was "
        "released without contact regression weights)",
    )
    parser.add_argument(
        "--contacts-png",
        action="store_true",
        help=f"also draw each contact map as OUTDIR/<name>{CONTACTS_PNG_SUFFIX} (saved in the file too only with "
        "--contacts)",
    )
    parser.add_argument(
        "--logits",
        action="store_true",
        help="also save the masked-LM logits at every residue (L x 33, columns in the order of the ESM vocabulary: "
        f"{' '.join(ALL_TOKENS)})",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        metavar="N",
        type=int,
        default=4096,
        help="token budget of one forward pass: sequences are sorted by length and packed while "
        "count x (longest + 2) <= N; a longer sequence runs alone; MSAs always run one at a time (default: 4096)",
    )
    parser.add_argument(
        "--max-depth",
        metavar="N",
        type=int,
        default=DEFAULT_MAX_DEPTH,
        help="MSA Transformer: rows kept per MSA, the query included; 0 keeps all (the model takes at most 1024) "
        f"(default: {DEFAULT_MAX_DEPTH})",
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="diverse",
        help="MSA Transformer: how rows are kept when an MSA is deeper than --max-depth: 'diverse' adds, after the "
        "query, the row with the largest mean Hamming distance to those kept, one at a time; 'first' keeps the "
        "first rows of the file (default: diverse)",
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

    for path in args.input:
        if not path.is_file():
            raise CliError(f"input file {path} does not exist; give a FASTA or MSA file")
    if args.max_tokens_per_batch < 1:
        raise CliError("--max-tokens-per-batch must be a positive number of tokens")
    if args.max_depth < 0:
        raise CliError("--max-depth must be a number of rows (0 keeps all)")
    contacts = args.contacts or args.contacts_png

    try:
        model = load_language_model(args.model, device=args.device, dtype=DTYPES.get(args.dtype))
        saved_layers = {layer: resolve_layer(layer, model.num_layers) for layer in dict.fromkeys(args.layers)}
    except (OSError, ValueError) as exc:  # checkpoint and download errors name the source and the fix
        raise CliError(str(exc)) from exc
    if args.logits and getattr(model, "lm_head", None) is None:
        raise CliError(f"{args.model} was saved without its masked-LM head, so it gives no logits; drop --logits")
    if contacts and not model.contact_head.regression.weight.detach().any():
        raise CliError(
            f"{args.model} has no contact regression weights (ESM-1v was released without them; for other models put "
            "<name>-contact-regression.pt beside the checkpoint), so its contacts would be meaningless; drop --contacts"
        )

    inputs = read_msas(args) if getattr(model, "takes_msa", False) else read_records(args, model)
    if all(item.problem for item in inputs):
        first = inputs[0]
        raise CliError(
            f"nothing to embed in {' '.join(map(str, args.input))}; first problem: {first.where}: {first.problem}"
        )

    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the output directory {args.output_dir}: {exc.strerror or exc}") from exc
    names = unique_ids(item.id for item in inputs)
    manifest: list[tuple[str, str, int, str]] = []  # id, file, length, status; "ok" rows replace these once written
    for item in inputs:
        manifest.append((item.id, "", item.length, f"skipped: {item.problem}"))
        if item.problem:
            log.warning("skipping record %r (%s): %s", item.id, item.where, item.problem)
    valid = [i for i, item in enumerate(inputs) if not item.problem]
    with tqdm(total=len(valid), unit="seq", desc="embed", disable=getattr(args, "quiet", False)) as bar:
        for start in range(0, len(valid), SEQUENCES_PER_CHUNK):
            chunk = valid[start : start + SEQUENCES_PER_CHUNK]
            out = embed(
                model,
                [inputs[i].msa or inputs[i].sequence for i in chunk],
                layers=list(saved_layers),
                contacts=contacts,
                logits=args.logits,
                max_tokens_per_batch=args.max_tokens_per_batch,
            )
            for row, i in enumerate(chunk):
                filename = f"{names[i]}.{args.format}"
                result = sequence_result(out, row, saved_layers)
                with _writing(args.output_dir / filename):
                    if args.contacts_png:
                        png = resolve_inside(args.output_dir, names[i] + CONTACTS_PNG_SUFFIX)
                        atomic_write_bytes(png, contact_map_png(result["contacts"], inputs[i].id))
                    if not args.contacts:
                        result.pop("contacts", None)
                    write_result(args.output_dir / filename, inputs[i], result, args.format)
                manifest[i] = (inputs[i].id, filename, inputs[i].length, "ok")
            bar.update(len(chunk))

    with _writing(args.output_dir / "manifest.tsv"):
        write_manifest(args.output_dir / "manifest.tsv", manifest)
    return records_exit_code(len(inputs) - len(valid))


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A block that writes ``path``: an OSError stops the command with one line naming the file (the error's own
    file if it names one) and what happened."""
    try:
        yield
    except OSError as exc:
        log.debug("writing %s failed", path, exc_info=True)
        hint = "; no partial file was left: make room (or fix the disk) and run it again" if is_disk_error(exc) else ""
        raise CliError(write_failure(exc.filename or path, exc) + hint) from exc


def read_records(args: argparse.Namespace, model) -> list[EmbedInput]:
    """Every record of the FASTA inputs, with why it cannot be embedded (see ``record_problem``)."""
    limit = getattr(model, "max_residues", None)
    inputs = []
    for path in args.input:
        try:
            records = list(read_fasta(path))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc}") from exc
        for record in records:
            where = f"{path} line {record.line}"
            problem = record_problem(record, limit)
            inputs.append(EmbedInput(record.id, record.sequence, record.num_residues, where, problem))
    if not inputs:
        raise CliError(f"{', '.join(map(str, args.input))} hold(s) no FASTA records")
    return inputs


def read_msas(args: argparse.Namespace) -> list[EmbedInput]:
    """One input per MSA file, its rows selected by ``--max-depth``/``--selection``; a bad file becomes a problem."""
    inputs = []
    for path in args.input:
        try:
            msa = select_rows(read_msa(path), args.max_depth or None, args.selection)
        except (OSError, ValueError) as exc:
            inputs.append(EmbedInput(path.stem, "", 0, str(path), str(exc)))
            continue
        inputs.append(EmbedInput(msa.ids[0], msa.query, msa.width, str(path), None, msa))
    return inputs


def record_problem(record: FastaRecord, max_length: int | None = None) -> str | None:
    """Why a record cannot be embedded, or None: FASTA validation (with the model's length limit), one chain."""
    problem = validate_record(record, max_length)
    if problem is None and len(record.chains) > 1:
        problem = f"{len(record.chains)} chains separated by ':'; embed takes one chain per record"
    return problem


def sequence_result(out: Embeddings, i: int, saved_layers: dict[int, int]) -> dict:
    """Input ``i``'s tensors (float32, CPU) in fair-esm ``extract.py`` naming, keyed by absolute layer."""
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
    if out.logits is not None:
        result["logits"] = out.logits[i].float().cpu()
    if out.msas is not None:
        result["msa_depth"] = torch.tensor(out.msas[i].depth)
    return result


def write_result(path: Path, item: EmbedInput, arrays: dict, file_format: str) -> None:
    """Write one input's result atomically: a ``torch.save`` dict, or an ``.npz`` with flat keys.

    The file is made in memory and then written, so a failed write raises the OSError (naming ``path``) rather than
    a serializer's own error."""
    buffer = io.BytesIO()
    if file_format == "pt":
        torch.save({"label": item.id, "sequence": item.sequence, **arrays}, buffer)
    else:
        flat = {"label": np.array(item.id), "sequence": np.array(item.sequence)}
        for name, value in arrays.items():
            if isinstance(value, dict):
                flat.update({f"{name}_{layer}": tensor.numpy() for layer, tensor in value.items()})
            else:
                flat[name] = value.numpy()
        np.savez(buffer, **flat)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(path: Path, rows: list[tuple[str, str, int, str]]) -> None:
    """``id file length status`` per input, tab-separated, in input order."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(("id", "file", "length", "status"))
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
