"""``esmfold-lite embed``: language-model embeddings of FASTA records (or MSAs), streamed: one file per input
(``pt``/``npz``, fair-esm's layout) or resumable safetensors shards with an index (``io.embedding_shards``), plus a
manifest. This module holds the command, its loop and the reading of its inputs; the outputs, and how a failed write
stops the command, are ``commands.embed_outputs``.

The FASTA is read as it is embedded, chunk by chunk, so a million records never sit in memory at once.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from esmfold_lite.alphabet import ALL_TOKENS
from esmfold_lite.cli import (
    CliError,
    add_logging_options,
    add_nogpu_option,
    device_after_nogpu,
    dtype_name,
    exit_status_help,
    records_exit_code,
    torch_device,
)
from esmfold_lite.io.fasta import FastaRecord, count_records, read_fasta, validate_record
from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH, SELECTIONS, read_msa, select_rows
from esmfold_lite.io.output_names import CONTACTS_PNG_SUFFIX, DEFAULT_INCLUDE, INCLUDES
from esmfold_lite.progress_display import Progress
from esmfold_lite.sequences import LANGUAGE_MODEL

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch and the models are imported when the command runs, not for --help
    from esmfold_lite.commands.embed_outputs import EmbedInput
    from esmfold_lite.lm.embed import Embeddings

DTYPE_CHOICES = ("float32", "float16", "bfloat16")
CHUNK_BATCHES = 8  # results are written and freed after every chunk of this many --max-tokens-per-batch budgets
DEFAULT_SHARD_MIB = 256


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
            "'bos_representations' (the <cls> vector, D) per layer (--include chooses which of these three), keyed "
            "by absolute layer number (-1 is saved under the model's last layer), 'contacts' (L x L) with --contacts, "
            "'logits' (L x 33; "
            "ESM C: L x 64) with --logits and, for an MSA, 'msa_depth' (rows used). npz files flatten these to keys "
            "like 'representations_33'. Values are saved as float32. With --format safetensors the same arrays go into "
            "shards (see --format; a repeated id is skipped, and manifest.tsv's file column names the shard). The "
            "FASTA is streamed; progress shows sequences/s, residues/s and the time left. fair-esm extract.py's "
            "spellings are accepted: --repr_layers (= --layers), --toks_per_batch (= --max-tokens-per-batch), "
            "--nogpu (= --device cpu), --include (contacts = --contacts)."
        ),
        epilog=exit_status_help(
            ok="every record embedded",
            some_failed="some records skipped (their reason is in manifest.tsv and the log)",
            failed="nothing could run or the run had to stop (unreadable FASTA, no valid record, model not loadable, "
            "an output that cannot be written: a full or failing disk)",
            interrupted="interrupted (SIGINT/SIGTERM; the files and shards written are kept)",
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
        "--repr_layers",
        metavar="N",
        type=int,
        nargs="+",
        default=[-1],
        help="layers to save: 0 = token embeddings, 1..num_layers = after that block (the last one after the final "
        "LayerNorm); negative values count from the end, -1 = last; put the inputs before this flag; --repr_layers "
        "is fair-esm extract.py's name for it (default: -1)",
    )
    parser.add_argument(
        "--include",
        choices=INCLUDES,
        nargs="+",
        default=None,
        help="what to save per input, several allowed (fair-esm extract.py's --include): mean = "
        "'mean_representations', per_tok = 'representations' (per residue: by far the largest; leave it out to "
        "keep only means of a million sequences), bos = 'bos_representations', contacts = 'contacts' (the same "
        f"as --contacts); put the inputs before this flag (default: {' '.join(DEFAULT_INCLUDE)}, plus contacts "
        "with --contacts)",
    )
    parser.add_argument(
        "--format",
        choices=("pt", "npz", "safetensors"),
        default="pt",
        help="pt: one torch.save dict per input (fair-esm extract.py's layout); npz: the same as numpy .npz; "
        "safetensors: shards OUTDIR/shards/shard-NNNNNN.safetensors with an index OUTDIR/index.sqlite (id -> shard, "
        "row, residue offset), for millions of sequences: the same command resumes a killed run without embedding "
        "again what is done, and repeated ids are reported, not overwritten; read them with "
        "esmfold_lite.open_embeddings(OUTDIR)[id] (default: pt)",
    )
    parser.add_argument(
        "--shard-size",
        metavar="MIB",
        type=float,
        default=DEFAULT_SHARD_MIB,
        help="safetensors: a shard is written once the sequences waiting for it hold this many MiB of arrays "
        f"(also the memory they take); a killed run loses at most that much work (default: {DEFAULT_SHARD_MIB})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="safetensors: delete OUTDIR's index and shards and embed everything again (needed when the model, "
        "layers, dtype or saved arrays differ from the run that made them, or the index is damaged)",
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
        help="also save the masked-LM logits at every residue (L x 33 for the fair-esm models, columns in the order "
        f"of the ESM vocabulary: {' '.join(ALL_TOKENS)}; L x 64 for ESM C, whose first 33 columns are the same "
        "tokens with its chain break '|' in place of <null_1>)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        "--toks_per_batch",
        metavar="N",
        type=int,
        default=4096,
        help="token budget of one forward pass: sequences are sorted by length and packed while "
        "count x (longest + 2) <= N; a longer sequence runs alone; MSAs always run one at a time; --toks_per_batch "
        "is fair-esm extract.py's name for it (default: 4096)",
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
        "--device", metavar="D", type=torch_device, default=None,
        help="torch device: cpu, cuda, cuda:1 (default: the loader's choice)",
    )  # fmt: skip
    add_nogpu_option(parser, "extract.py")
    parser.add_argument(
        "--dtype", type=dtype_name, choices=DTYPE_CHOICES, default=None,
        help="model precision; bf16, fp16 and half are accepted too (default: as the loader chooses)",
    )  # fmt: skip
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.commands.embed_outputs import FileSink, ShardSink
    from esmfold_lite.lm.contact_head import check_contact_regression
    from esmfold_lite.lm.embed import resolve_layer
    from esmfold_lite.lm.load import load_language_model

    args.device = device_after_nogpu(args)
    given = {
        "--contacts": args.contacts,
        "--contacts-png": args.contacts_png,
        "--include contacts": "contacts" in (args.include or ()),
    }
    contact_flags = [flag for flag, on in given.items() if on]  # named in errors: the flags the user gave
    include = set(args.include or DEFAULT_INCLUDE) | ({"contacts"} if args.contacts else set())
    args.include = [name for name in INCLUDES if name in include]  # what is saved, in a fixed order
    args.contacts = "contacts" in include
    args.interrupted = (
        "interrupted; the committed shards are kept, run the same command again to resume"
        if args.format == "safetensors"
        else "interrupted; the files written are kept (a run with --format safetensors resumes; this one starts over)"
    )

    for path in args.input:
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist" if not path.exists() else "is not a file"
            raise CliError(f"input {path} {what}; give a FASTA or MSA file")
    if args.max_tokens_per_batch < 1:
        raise CliError("--max-tokens-per-batch must be a positive number of tokens")
    if args.max_depth < 0:
        raise CliError("--max-depth must be a number of rows (0 keeps all)")
    if args.shard_size <= 0:
        raise CliError("--shard-size must be a positive number of MiB")
    if args.format == "safetensors" and args.contacts_png:
        raise CliError(
            "--contacts-png draws one PNG per input, for --format pt or npz; with safetensors save the maps with "
            "--contacts and draw them from esmfold_lite.open_embeddings(OUTDIR)[id]['contacts']"
        )

    try:
        model = load_language_model(args.model, device=args.device, dtype=args.dtype)
        saved_layers = {layer: resolve_layer(layer, model.num_layers) for layer in dict.fromkeys(args.layers)}
    except (OSError, ValueError) as exc:  # checkpoint and download errors name the source and the fix
        raise CliError(str(exc)) from exc
    if args.logits and getattr(model, "lm_head", None) is None:
        raise CliError(f"{args.model} was saved without its masked-LM head, so it gives no logits; drop --logits")
    flags = " and ".join(contact_flags)
    if contact_flags and getattr(model, "contact_head", None) is None:
        raise CliError(f"{args.model} ({type(model).__name__}) has no contact head, so it predicts no contacts; drop "
                       f"{flags}, or use an ESM-2 model for contacts")  # fmt: skip
    if contact_flags:
        try:
            check_contact_regression(model)
        except ValueError as exc:  # names the model and where its regression comes from
            raise CliError(f"{args.model} has no contact regression weights; drop {flags}. {exc}") from None

    if getattr(model, "takes_msa", False):
        inputs: Iterable[EmbedInput] = read_msas(args, model)
        total: int | None = len(inputs)
    else:
        inputs = stream_records(args, model)
        counts = [count_records(path) for path in args.input]
        total = None if None in counts else sum(counts)
    sink = ShardSink(args, model, saved_layers) if args.format == "safetensors" else FileSink(args)
    with sink:
        counted = embed_all(model, sink.classify(inputs), args, saved_layers, sink, total)
    if counted.embedded + counted.done == 0:
        raise CliError(
            f"nothing to embed in {' '.join(map(str, args.input))}; first problem: {counted.first_problem}"
        )
    return records_exit_code(counted.skipped)


@dataclass
class Counts:
    embedded: int = 0
    residues: int = 0
    done: int = 0
    skipped: int = 0
    first_problem: str = ""


def embed_all(
    model, inputs: Iterable[EmbedInput], args: argparse.Namespace, saved_layers: dict[int, int], sink, total: int | None
) -> Counts:
    """Embed the inputs chunk by chunk (``CHUNK_BATCHES`` token budgets each, sorted into batches by length within
    a chunk), handing each result to ``sink`` as it comes; progress with rates and an ETA on stderr (a bar on a
    terminal, else a log line every 30 s, ``progress_display``; nothing with -q)."""
    from esmfold_lite.lm.embed import embed

    counts = Counts()
    started = time.monotonic()
    with Progress(total, "embed", "seq", not getattr(args, "quiet", False), log) as bar:
        for chunk in _chunks(inputs, CHUNK_BATCHES * args.max_tokens_per_batch):
            todo = [item for item in chunk if not (item.problem or item.done)]
            out = None
            if todo:
                out = embed(
                    model,
                    [item.msa or item.sequence for item in todo],
                    layers=list(saved_layers),
                    contacts=args.contacts or args.contacts_png,
                    logits=args.logits,
                    max_tokens_per_batch=args.max_tokens_per_batch,
                    max_depth=None,  # MSAs: their rows were selected by read_msas, by --max-depth and --selection
                )
            rows = iter(range(len(todo)))
            for item in chunk:
                if item.problem:
                    counts.skipped += 1
                    counts.first_problem = counts.first_problem or f"{item.where}: {item.problem}"
                    log.warning("skipping record %r (%s): %s", item.id, item.where, item.problem)
                    sink.skipped(item)
                elif item.done:
                    counts.done += 1
                    sink.done(item)
                else:
                    counts.embedded += 1
                    counts.residues += item.length
                    sink.write(item, sequence_result(out, next(rows), saved_layers, args.include))
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.set_postfix(f"{counts.residues / elapsed:.0f} res/s")
            bar.update(len(chunk))
    elapsed = time.monotonic() - started
    log.info(
        "embedded %d sequences (%d residues) in %.1f s: %.2f seq/s, %.0f residues/s; %d embedded before, %d skipped",
        counts.embedded, counts.residues, elapsed, counts.embedded / max(elapsed, 1e-9),
        counts.residues / max(elapsed, 1e-9), counts.done, counts.skipped,
    )  # fmt: skip
    return counts


def _chunks(inputs: Iterable[EmbedInput], max_tokens: int) -> Iterator[list[EmbedInput]]:
    """Consecutive inputs, cut once the tokens of those to be embedded reach ``max_tokens`` (so results are
    written, and memory freed, every few batches even on a million records; a chunk of several batches lets the
    length sort pack batches with little padding)."""
    chunk: list[EmbedInput] = []
    tokens = 0
    for item in inputs:
        chunk.append(item)
        if not (item.problem or item.done):
            tokens += item.length + 2
        if tokens >= max_tokens:
            yield chunk
            chunk, tokens = [], 0
    if chunk:
        yield chunk


def stream_records(args: argparse.Namespace, model) -> Iterator[EmbedInput]:
    """Every record of the FASTA inputs, read as it is needed, with why it cannot be embedded (``record_problem``)."""
    from esmfold_lite.commands.embed_outputs import EmbedInput

    limit = getattr(model, "max_residues", None)
    any_record = False
    for path in args.input:
        try:
            for record in read_fasta(path):
                any_record = True
                where = f"{path} line {record.line}"
                problem = record_problem(record, limit)
                yield EmbedInput(record.id, record.sequence, record.num_residues, where, problem)
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not any_record:
        inputs = ", ".join(map(str, args.input))
        raise CliError(f"no FASTA records in {inputs} (a record starts with a '>' header line)")


def read_msas(args: argparse.Namespace, model) -> list[EmbedInput]:
    """One input per MSA file, its rows selected by ``--max-depth``/``--selection``; a bad file, or one wider or
    deeper than the model takes (``msa_problem``), becomes a problem."""
    from esmfold_lite.commands.embed_outputs import EmbedInput
    from esmfold_lite.lm.embed import msa_problem

    inputs = []
    for path in args.input:
        try:
            msa = select_rows(read_msa(path), args.max_depth or None, args.selection)
        except (OSError, ValueError) as exc:
            inputs.append(EmbedInput(path.stem, "", 0, str(path), str(exc)))
            continue
        problem = msa_problem(model, msa)
        inputs.append(EmbedInput(msa.ids[0], msa.query, msa.width, str(path), problem, msa))
    return inputs


def record_problem(record: FastaRecord, max_length: int | None = None) -> str | None:
    """Why a record cannot be embedded, or None: FASTA validation (with the model's length limit), one chain."""
    return validate_record(record, max_length, LANGUAGE_MODEL)


def sequence_result(
    out: Embeddings, i: int, saved_layers: dict[int, int], include: Iterable[str] = DEFAULT_INCLUDE
) -> dict:
    """Input ``i``'s tensors (float32, CPU) in fair-esm ``extract.py`` naming, keyed by absolute layer; of the
    representations only those ``include`` names (``mean``, ``per_tok``, ``bos``), as ``extract.py --include`` does.

    Every tensor is a copy that owns its memory: a row of the batch's stacked means is a view of the whole batch,
    and ``torch.save`` writes a view's whole storage (fair-esm's ``extract.py`` clones for the same reason)."""
    import torch

    def own(t: torch.Tensor) -> torch.Tensor:
        return t.to(device="cpu", dtype=torch.float32, copy=True)

    result = {
        name: {absolute: own(rows[layer][i]) for layer, absolute in saved_layers.items()}
        for name, rows, kind in (
            ("representations", out.representations, "per_tok"),
            ("mean_representations", out.mean, "mean"),
            ("bos_representations", out.cls, "bos"),
        )
        if kind in include
    }
    if out.contacts is not None:
        result["contacts"] = own(out.contacts[i])
    if out.logits is not None:
        result["logits"] = own(out.logits[i])
    if out.msas is not None:
        result["msa_depth"] = torch.tensor(out.msas[i].depth)
    return result
