"""``embed_fasta``: language-model embeddings of FASTA records (or MSAs) into an output folder, streamed: one file
per input (``pt``/``npz``, fair-esm's layout) or resumable safetensors shards with an index
(``pipeline.embedding_shards``), plus ``manifest.tsv``. ``esmfold-lite embed`` is this function behind argparse.

This module holds the run: reading the inputs, its loop (chunks of token budgets, batched by ``lm.embed``'s
``token_budget_batches`` as ``score-variants`` is), progress and the counts; the outputs, and how a failed write stops
the run, are ``pipeline.embedding_outputs``. The FASTA is read as it is embedded, chunk by chunk, so a million records
never sit in memory at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from esmfold_lite.io.fasta import FastaRecord, count_records, read_fasta, validate_record
from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH, SELECTIONS, read_msa, select_rows
from esmfold_lite.io.output_names import DEFAULT_INCLUDE, INCLUDES
from esmfold_lite.lm.contact_head import check_contact_regression
from esmfold_lite.lm.embed import Embeddings, embed, msa_problem, resolve_layer
from esmfold_lite.lm.load import load_language_model
from esmfold_lite.pipeline.embedding_outputs import EmbedInput, FileSink, ShardSink
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.names import DEFAULT_EMBED_TOKENS_PER_BATCH, DEFAULT_SHARD_MIB, EMBED_FORMATS
from esmfold_lite.progress_display import Progress
from esmfold_lite.sequences import LANGUAGE_MODEL
from esmfold_lite.version import __version__
from esmfold_lite.weights.fingerprint import checkpoint_fingerprint

log = logging.getLogger(__name__)

CHUNK_BATCHES = 8  # results are written and freed after every chunk of this many max_tokens_per_batch budgets


@dataclass
class EmbedCounts:
    """What a run did: inputs embedded (and their residues), found embedded by an earlier run (sharded output),
    skipped (each one's reason is in ``manifest.tsv``), and the first skip's reason (``where: problem``)."""

    embedded: int = 0
    residues: int = 0
    done: int = 0
    skipped: int = 0
    first_problem: str = ""


@dataclass(frozen=True)
class EmbedRequest:
    """What to compute per input, as the loop and ``embed_settings`` read it: the layers (as asked -> absolute), the
    representations saved (``include``, in ``INCLUDES`` order), whether contacts are computed (``contacts``: kept in
    the outputs; ``contacts_png``: drawn), logits, and for MSAs the row selection."""

    saved_layers: dict[int, int]
    include: tuple[str, ...]
    contacts: bool
    contacts_png: bool
    logits: bool
    max_tokens_per_batch: int
    max_depth: int
    selection: str


def embed_fasta(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    model: str | os.PathLike,
    layers: Sequence[int] = (-1,),
    format: str = "pt",
    include: Sequence[str] | None = None,
    contacts: bool = False,
    contacts_png: bool = False,
    logits: bool = False,
    max_tokens_per_batch: int = DEFAULT_EMBED_TOKENS_PER_BATCH,
    max_depth: int = DEFAULT_MAX_DEPTH,
    selection: str = "diverse",
    shard_size: float = DEFAULT_SHARD_MIB,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
) -> EmbedCounts:
    """Embed every record of the FASTA file(s) ``inputs`` (for the MSA Transformer: the query of every MSA file, one
    MSA per file) into ``outdir``, as ``esmfold-lite embed`` does (its ``--help`` tells every option at length).

    Args:
        inputs: FASTA file(s) (optionally gzip-compressed); for the MSA Transformer, a3m/a2m/aligned-FASTA files.
        outdir: output directory, created if missing (and removed again if the run writes nothing). One run at a
            time: a second run on it raises PipelineError at once.
        model: the language model's source for ``load_language_model`` (registry name, checkpoint, folder).
        layers: layers saved: 0 = token embeddings, ``num_layers`` or -1 = the last; negative count from the end.
        format: ``"pt"`` or ``"npz"`` (one file per input, ``<safe id>.pt``) or ``"safetensors"`` (shards and
            ``index.sqlite``, resumable; read with ``esmfold_lite.open_embeddings(outdir)``).
        include: which of ``mean``, ``per_tok`` (``(L, D)`` per residue), ``bos``, ``contacts`` to save (None:
            ``DEFAULT_INCLUDE``); ``contacts=True`` adds ``contacts``.
        contacts: also save the ``(L, L)`` contact probabilities; ``contacts_png``: draw them as
            ``<name>.contacts.png`` (pt/npz only).
        logits: also save the masked-LM logits, ``(L, V)``.
        max_tokens_per_batch: budget of one forward pass, ``count * (longest + 2)`` tokens.
        max_depth, selection: MSA rows kept per MSA (0 keeps all) and how (``io.msa.SELECTIONS``).
        shard_size: safetensors: MiB of arrays that wait for a shard before it is written.
        overwrite: safetensors: delete the index and shards and embed everything again.
        device, dtype: for ``load_language_model``.
        progress: show progress (a bar on a terminal, else a log line every 30 s).
    Returns:
        The counts; every input is a row of ``outdir/manifest.tsv`` (id, file, length, status).
    Raises:
        PipelineError: an input that is not a file or cannot be read, no record, nothing embeddable, a model that
            cannot load or lacks what was asked (logits, contacts), an unusable or busy ``outdir``, an index of other
            settings (without ``overwrite``), a failed write (full or failing disk). The messages name the
            command line's flags, as ``esmfold-lite embed`` shows them.
        ValueError: an unknown ``format``, ``include`` name or ``selection``.
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(path) for path in inputs]
    if format not in EMBED_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EMBED_FORMATS)}, got {format!r}")
    if not set(include or ()) <= set(INCLUDES):
        raise ValueError(f"include must name some of {', '.join(INCLUDES)}, got {list(include or ())}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    given = {
        "--contacts": contacts,
        "--contacts-png": contacts_png,
        "--include contacts": "contacts" in (include or ()),
    }
    contact_flags = [flag for flag, on in given.items() if on]  # named in errors: the options given
    saved = set(include or DEFAULT_INCLUDE) | ({"contacts"} if contacts else set())
    contacts = "contacts" in saved
    check_options(paths, format, contacts_png, max_tokens_per_batch, max_depth, shard_size)

    try:
        lm = load_language_model(model, device=device, dtype=dtype)
        saved_layers = {layer: resolve_layer(layer, lm.num_layers) for layer in dict.fromkeys(layers)}
    except (OSError, ValueError) as exc:  # checkpoint and download errors name the source and the fix
        raise PipelineError(str(exc)) from exc
    check_model(lm, model, logits, contact_flags)
    request = EmbedRequest(
        saved_layers, tuple(name for name in INCLUDES if name in saved), contacts, contacts_png,
        logits, max_tokens_per_batch, max_depth, selection,
    )  # fmt: skip

    if getattr(lm, "takes_msa", False):
        items: Iterable[EmbedInput] = read_msas(paths, lm, max_depth, selection)
        total: int | None = len(items)
    else:
        items = stream_records(paths, lm)
        per_file = [count_records(path) for path in paths]  # None: a file that cannot be read twice
        total = None if None in per_file else sum(per_file)
    outdir = Path(outdir)
    if format == "safetensors":
        settings = embed_settings(model, lm, request)
        sink: FileSink | ShardSink = ShardSink(outdir, settings, int(shard_size * 2**20), overwrite, contacts)
    else:
        sink = FileSink(outdir, format, contacts, contacts_png)
    with sink:
        counted = embed_all(lm, sink.classify(items), request, sink, total, progress)
    if counted.embedded + counted.done == 0:
        raise PipelineError(f"nothing to embed in {' '.join(map(str, paths))}; first problem: {counted.first_problem}")
    return counted


def check_options(
    paths: list[Path],
    file_format: str,
    contacts_png: bool,
    max_tokens_per_batch: int,
    max_depth: int,
    shard_size: float,
) -> None:
    """PipelineError for an input that is not a file or an option out of its range, before the model loads."""
    for path in paths:
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist" if not path.exists() else "is not a file"
            raise PipelineError(f"input {path} {what}; give a FASTA or MSA file")
    if max_tokens_per_batch < 1:
        raise PipelineError("--max-tokens-per-batch must be a positive number of tokens")
    if max_depth < 0:
        raise PipelineError("--max-depth must be a number of rows (0 keeps all)")
    if shard_size <= 0:
        raise PipelineError("--shard-size must be a positive number of MiB")
    if file_format == "safetensors" and contacts_png:
        raise PipelineError(
            "--contacts-png draws one PNG per input, for --format pt or npz; with safetensors save the maps with "
            "--contacts and draw them from esmfold_lite.open_embeddings(OUTDIR)[id]['contacts']"
        )


def check_model(model: nn.Module, source: str | os.PathLike, logits: bool, contact_flags: list[str]) -> None:
    """PipelineError if the loaded model lacks what was asked: an LM head for logits, a contact head and its
    regression weights for contacts (``contact_flags``: the options that asked for them, named in the message)."""
    if logits and getattr(model, "lm_head", None) is None:
        raise PipelineError(f"{source} was saved without its masked-LM head, so it gives no logits; drop --logits")
    flags = " and ".join(contact_flags)
    if contact_flags and getattr(model, "contact_head", None) is None:
        raise PipelineError(f"{source} ({type(model).__name__}) has no contact head, so it predicts no contacts; drop "
                            f"{flags}, or use an ESM-2 model for contacts")  # fmt: skip
    if contact_flags:
        try:
            check_contact_regression(model)
        except ValueError as exc:  # names the model and where its regression comes from
            raise PipelineError(f"{source} has no contact regression weights; drop {flags}. {exc}") from None


def embed_settings(source: str | os.PathLike, model: nn.Module, request: EmbedRequest) -> dict[str, object]:
    """What makes a sharded run's numbers (kept in its index; a resumed run must match): the package version, the
    model's fingerprint and dtype, the saved layers (absolute), the arrays saved (include, contacts, logits) and, for
    MSAs, the row selection."""
    settings = {
        "esmfold_lite": __version__,
        "model": checkpoint_fingerprint(source),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "layers": sorted(set(request.saved_layers.values())),
        "include": list(request.include),
        "contacts": request.contacts,
        "logits": request.logits,
    }
    if getattr(model, "takes_msa", False):
        settings.update(max_depth=request.max_depth, selection=request.selection)
    return settings


def embed_all(
    model: nn.Module,
    inputs: Iterable[EmbedInput],
    request: EmbedRequest,
    sink: FileSink | ShardSink,
    total: int | None,
    progress: bool = True,
) -> EmbedCounts:
    """Embed the inputs chunk by chunk (``CHUNK_BATCHES`` token budgets each, sorted into batches by length within
    a chunk), handing each result to ``sink`` as it comes; progress with rates and an ETA on stderr (a bar on a
    terminal, else a log line every 30 s, ``progress_display``; nothing without ``progress``)."""
    counts = EmbedCounts()
    started = time.monotonic()
    with Progress(total, "embed", "seq", progress, log) as bar:
        for chunk in _chunks(inputs, CHUNK_BATCHES * request.max_tokens_per_batch):
            todo = [item for item in chunk if not (item.problem or item.done)]
            out = None
            if todo:
                out = embed(
                    model,
                    [item.msa or item.sequence for item in todo],
                    layers=list(request.saved_layers),
                    contacts=request.contacts or request.contacts_png,
                    logits=request.logits,
                    max_tokens_per_batch=request.max_tokens_per_batch,
                    max_depth=None,  # MSAs: their rows were selected by read_msas, by max_depth and selection
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
                    sink.write(item, sequence_result(out, next(rows), request.saved_layers, request.include))
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


def stream_records(paths: list[Path], model: nn.Module) -> Iterator[EmbedInput]:
    """Every record of the FASTA files, read as it is needed, with why it cannot be embedded (``record_problem``)."""
    limit = getattr(model, "max_residues", None)
    any_record = False
    for path in paths:
        try:
            for record in read_fasta(path):
                any_record = True
                where = f"{path} line {record.line}"
                problem = record_problem(record, limit)
                yield EmbedInput(record.id, record.sequence, record.num_residues, where, problem)
        except OSError as exc:
            raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not any_record:
        raise PipelineError(
            f"no FASTA records in {', '.join(map(str, paths))} (a record starts with a '>' header line)"
        )


def read_msas(paths: list[Path], model: nn.Module, max_depth: int, selection: str) -> list[EmbedInput]:
    """One input per MSA file, its rows selected by ``max_depth`` (0 keeps all) and ``selection``; a bad file, or one
    wider or deeper than the model takes (``msa_problem``), becomes a problem."""
    inputs = []
    for path in paths:
        try:
            msa = select_rows(read_msa(path), max_depth or None, selection)
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
