"""Records in, rows out: output formats and names, a protein's ``summary.tsv`` row (``ProteinResult``) and
``plan_record``, which turns a FASTA record into an error, a complete result or a ``FoldJob``.

What a user would not see otherwise is logged and goes into the protein's ``notes``: a record renamed because an
earlier one has its name (``x`` -> ``x_2``; ``rename_note``) and residues folded as unknown (``unknown_residues_note``);
``warn_of_earlier_proteins`` says when OUTDIR's summary lists proteins that are not in this run's input."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, MutableSet
from dataclasses import dataclass, fields
from pathlib import Path

from esmfold_lite.fold.chains import CHAIN_SEPARATOR, DEFAULT_LINKER
from esmfold_lite.io.fasta import FastaRecord, iter_unique_ids, read_fasta, safe_filename, validate_record
from esmfold_lite.io.output_names import FORMAT_SUFFIXES, output_paths
from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.names import RUN_REPORT_NAME, SUMMARY_NAME
from esmfold_lite.pipeline.options import FoldingOptions
from esmfold_lite.pipeline.run_state import RunState
from esmfold_lite.pipeline.settings import RunSettings
from esmfold_lite.sequences import UNKNOWN_AMINO_ACIDS

logger = logging.getLogger(__name__)

# names a protein never gets, so that its files cannot be the run's own (a protein "run" is named "run_2")
_PAE_STEM = FORMAT_SUFFIXES["pae"].removesuffix(".json").lower()
RESERVED_NAMES = frozenset(Path(name).stem.lower() for name in (SUMMARY_NAME, RUN_REPORT_NAME))
_MAX_LISTED = 5  # unknown residues listed in a note


@dataclass
class ProteinResult:
    """One row of ``summary.tsv``. ``reused`` (not written) marks a protein skipped because it was complete."""

    id: str
    length: int
    status: str  # "ok", "error", or "pending" (to be folded; an interrupted run leaves these)
    mean_plddt: float | None = None
    ptm: float | None = None
    seconds: float | None = None
    error: str = ""
    notes: str = ""
    sequence_hash: str = ""
    header: str = ""  # the FASTA header line (without ">"), which ``id`` was made from
    reused: bool = False

    def to_row(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reused"}

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> ProteinResult:
        def number(value: object, kind: type) -> float | int | None:
            try:
                return None if value in (None, "") else kind(value)
            except (TypeError, ValueError):
                return None

        return cls(
            id=str(row["id"]),
            length=number(row["length"], int) or 0,
            status=str(row["status"]),
            mean_plddt=number(row["mean_plddt"], float),
            ptm=number(row["ptm"], float),
            seconds=number(row["seconds"], float),
            error=str(row["error"] or ""),
            notes=str(row["notes"] or ""),
            sequence_hash=str(row["sequence_hash"] or ""),
            header=str(row.get("header") or ""),
        )


def sequence_hash(sequence: str) -> str:
    """First 16 hex digits of the SHA-256 of a (multi-chain) sequence: identifies what an output was folded from."""
    return hashlib.sha256(sequence.encode()).hexdigest()[:16]


def fasta_records(fasta: Path) -> Iterator[FastaRecord]:
    """The records of ``fasta``, read as a stream; PipelineError naming the file when it cannot be read (raised by
    the first ``next``, before any record, when it is missing or a directory) or holds no record."""
    empty = True
    try:
        for record in read_fasta(fasta):
            empty = False
            yield record
    except OSError as exc:
        raise PipelineError(f"cannot read FASTA file {fasta}: {exc.strerror or exc}") from exc
    if empty:
        raise PipelineError(f"no FASTA records in {fasta} (a record starts with a '>' header line)")


def output_names(ids: Iterable[str], taken: MutableSet[str] | None = None) -> Iterator[str]:
    """Safe, distinct output names for record ids, in order (``io.fasta.iter_unique_ids``), never one of
    ``RESERVED_NAMES``. ``taken``: an empty set-like to use instead of an in-memory set (for millions of ids).

    An id ending in ``_predicted_aligned_error_v1`` gets a ``_`` appended first: its ``.json`` would otherwise be
    the AlphaFold DB PAE file of the protein named by the rest of it."""
    taken = set() if taken is None else taken
    taken |= RESERVED_NAMES
    return iter_unique_ids((_unclashed(id) for id in ids), taken=taken)


def _unclashed(id: str) -> str:
    return id + "_" if id.lower().endswith(_PAE_STEM) else id


def rename_note(id: str, name: str) -> str | None:
    """Why record ``id`` got the output name ``name`` (from ``output_names``) rather than its own safe name, or None
    when it did not: that name is an earlier record's (compared ignoring case) or one of ``RESERVED_NAMES``."""
    own = safe_filename(_unclashed(id))
    if name == own:
        return None
    if own.lower() in RESERVED_NAMES:
        return f"renamed {name}: {own} is reserved for the run's own files"
    return f"renamed {name}: {own} is an earlier record's name (names ignore case)"


def unknown_residues_note(sequence: str) -> str | None:
    """The residues of ``sequence`` that ESMFold folds as unknown (``X B Z U O``: ``UNK``, placed without atoms),
    the first few with their 1-based positions (``chain:position`` in a complex, as ``sequences.sequence_problem``
    writes them), or None when there are none: ``2 residues folded as unknown (UNK, no atoms): U at 17, X at 40``."""
    chains = sequence.split(CHAIN_SEPARATOR)
    found = [
        f"{char} at {pos + 1 if len(chains) == 1 else f'{c + 1}:{pos + 1}'}"
        for c, chain in enumerate(chains)
        for pos, char in enumerate(chain)
        if char in UNKNOWN_AMINO_ACIDS
    ]
    if not found:
        return None
    more = f" and {len(found) - _MAX_LISTED} more" if len(found) > _MAX_LISTED else ""
    residues = "1 residue" if len(found) == 1 else f"{len(found)} residues"
    return f"{residues} folded as unknown (UNK, no atoms): {', '.join(found[:_MAX_LISTED])}{more}"


def warn_of_earlier_proteins(state: RunState, planned: int, fasta: str | os.PathLike) -> None:
    """Log a warning when OUTDIR's run state, once this run's ``planned`` records of ``fasta`` (each under a name of
    its own) have their rows, holds proteins beyond them: an earlier run folded another input into OUTDIR, and
    ``summary.tsv`` keeps listing those beside this run's."""
    earlier = sum(state.counts().values()) - planned
    if earlier > 0:
        logger.warning(
            "%s already holds %d protein(s) from an earlier run of another input (not in %s): they are kept, and "
            "%s lists them beside this run's",
            state.outdir, earlier, fasta, SUMMARY_NAME,
        )  # fmt: skip


def plan_record(
    state: RunState,
    settings: RunSettings,
    index: int,
    record: FastaRecord,
    name: str,
    options: FoldingOptions,
) -> ProteinResult | FoldJob:
    """What to do with record ``index`` (0-based, for messages) named ``name``, given the run's ``formats``,
    ``max_length`` and ``overwrite`` (``options``): a ``ProteinResult`` for a complete one (``reused``; also when it
    is now longer than ``max_length``: it was folded) or an invalid one (``error``, logged), else a ``FoldJob``. A
    record renamed (``rename_note``), or one replacing an earlier protein of its name with another sequence, is
    logged, and its notes say so; a job's notes name the residues folded as unknown (``unknown_residues_note``)."""
    seq_hash = sequence_hash(record.sequence)
    header = f"{record.id} {record.description}".strip()
    renamed = rename_note(record.id, name)
    if renamed is not None:
        logger.warning("record %d (line %d) %r: %s", index + 1, record.line, record.id, renamed)
    try:
        paths = output_paths(state.outdir, name, options.formats)
        reason = None
    except ValueError as exc:
        paths, reason = None, str(exc)
    earlier = state.row(name)
    if earlier is not None and earlier["sequence_hash"] not in (None, "", seq_hash):
        replaced = "replaces an earlier protein of this name (another sequence) in OUTDIR"
        logger.warning("record %d (line %d) %s: %s", index + 1, record.line, name, replaced)
        renamed = f"{renamed}; {replaced}" if renamed else replaced
    if paths is not None and not options.overwrite:
        row = state.complete_row(name, seq_hash, settings.digest, paths)
        if row is not None:
            complete = ProteinResult.from_row(row)
            complete.reused = True
            if complete.header != header:  # a row of an earlier version, which had no header column
                complete.header = header
                state.set_header(name, header)
            return complete
    reason = reason or validate_record(record, options.max_length)
    if reason is not None:
        logger.error("record %d (line %d) %s: %s", index + 1, record.line, name, reason)
        return ProteinResult(
            name, record.num_residues, "error", error=reason, notes=renamed or "", sequence_hash=seq_hash, header=header
        )
    n_chains = record.sequence.count(CHAIN_SEPARATOR) + 1
    tokens = record.num_residues + (n_chains - 1) * len(DEFAULT_LINKER)
    notes = [note for note in (renamed, unknown_residues_note(record.sequence)) if note is not None]
    return FoldJob(index, name, header, record.sequence, record.num_residues, tokens, notes)


def pending_row(job: FoldJob) -> dict[str, object]:
    """The row of a protein about to be folded: until its files are all written, an interrupted run must not count
    an earlier result as complete."""
    return ProteinResult(
        job.name, job.length, "pending", notes="; ".join(job.notes), sequence_hash=sequence_hash(job.sequence),
        header=job.header,
    ).to_row()  # fmt: skip
