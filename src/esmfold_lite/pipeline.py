"""FASTA → structure files for many proteins, robust to bad records, out-of-memory errors and crashes.

``predict_fasta`` reads every record, validates it, folds the valid ones in batches and writes, per protein,
``OUTDIR/<name>.<format>`` plus one row of ``OUTDIR/summary.tsv``:

- Names are the record ids made safe and unique (``io.fasta.unique_ids``); every path is checked to lie inside
  OUTDIR, whatever the ids contain.
- Batches: sequences sorted by length (shortest first) and packed so that ``batch size × longest length`` (the
  padded token count, chain linkers included) stays within ``max_tokens_per_batch``; a longer protein folds alone.
- Out of memory: batches are split, chunk sizes lowered, and (``cpu_fallback``) the CPU used, as
  ``batch_folding`` describes; each protein's ``notes`` say what it needed, one that fits nowhere gets
  ``status=error``.
- Files are written atomically and ``summary.tsv`` is rewritten (atomically) after every batch. A protein is
  *complete* when its summary row says ``ok`` for the same sequence (``sequence_hash``) and every requested file
  exists; a re-run skips complete proteins and retries all others. Rows of proteins not in the FASTA are kept.
  Two runs must not share one OUTDIR at the same time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from esmfold_lite.batch_folding import BatchFolder, Folder, FoldJob, FoldOutcome
from esmfold_lite.fold.chains import CHAIN_SEPARATOR, DEFAULT_LINKER
from esmfold_lite.io.atomic import remove_stale_temp_files
from esmfold_lite.io.fasta import FastaRecord, read_fasta, unique_ids, validate_record
from esmfold_lite.io.outputs import FORMAT_SUFFIXES, output_paths, read_summary, write_protein, write_summary

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = tuple(FORMAT_SUFFIXES)
DEFAULT_FORMATS: tuple[str, ...] = ("pdb", "json")
DEFAULT_MAX_TOKENS_PER_BATCH = 1024
SUMMARY_NAME = "summary.tsv"


class PipelineError(Exception):
    """A problem that stops the whole run (unreadable FASTA, no records, unusable OUTDIR, model not loadable)."""


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
    reused: bool = False

    def to_row(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reused"}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> ProteinResult:
        def number(text: str, kind: type) -> float | int | None:
            try:
                return kind(text)
            except ValueError:
                return None

        return cls(
            id=row["id"],
            length=number(row["length"], int) or 0,
            status=row["status"],
            mean_plddt=number(row["mean_plddt"], float),
            ptm=number(row["ptm"], float),
            seconds=number(row["seconds"], float),
            error=row["error"],
            notes=row["notes"],
            sequence_hash=row["sequence_hash"],
        )


def sequence_hash(sequence: str) -> str:
    """First 16 hex digits of the SHA-256 of a (multi-chain) sequence: identifies what an output was folded from."""
    return hashlib.sha256(sequence.encode()).hexdigest()[:16]


def _read_records(fasta: Path) -> list[FastaRecord]:
    try:
        records = list(read_fasta(fasta))
    except OSError as exc:
        raise PipelineError(f"cannot read FASTA file {fasta}: {exc.strerror or exc}") from exc
    if not records:
        raise PipelineError(f"no FASTA records in {fasta} (a record starts with a '>' header line)")
    return records


def _prepare_outdir(outdir: Path) -> Path:
    if outdir.exists() and not outdir.is_dir():
        raise PipelineError(f"output directory {outdir} exists and is not a directory")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as exc:
        raise PipelineError(f"output directory {outdir} is not usable: {exc.strerror or exc}") from exc
    outdir = outdir.resolve()
    for path in remove_stale_temp_files(outdir):
        logger.info("removed %s, left by an interrupted run", path.name)
    return outdir


def _is_complete(row: dict[str, str] | None, seq_hash: str, paths: dict[str, Path]) -> bool:
    return (
        row is not None
        and row["status"] == "ok"
        and row["sequence_hash"] == seq_hash
        and all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    )


def _load_model(source: str | os.PathLike, lm, device, dtype, cpu_offload: bool) -> Folder:
    import esmfold_lite  # late: the package's __init__ imports this module

    extra = {"lm_device": "cpu", "lm_dtype": torch.float32} if cpu_offload else {}
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loading the model from %s onto %s", source, device)
    try:
        return esmfold_lite.load_model(source, lm=lm, device=device, dtype=dtype, **extra)
    except Exception as exc:  # the loader's own message names the problem; keep it on one line
        logger.debug("loading the model failed", exc_info=True)
        raise PipelineError(f"cannot load the model from {source}: {exc}") from exc


def _plan(
    records: list[FastaRecord],
    outdir: Path,
    formats: Sequence[str],
    rows: dict[str, dict[str, object]],
    max_length: int | None,
    overwrite: bool,
) -> tuple[dict[int, ProteinResult], list[FoldJob]]:
    """Results of invalid and complete records (by FASTA index) and jobs for the rest; updates ``rows``."""
    results: dict[int, ProteinResult] = {}
    jobs: list[FoldJob] = []
    for index, (record, name) in enumerate(zip(records, unique_ids(r.id for r in records), strict=True)):
        seq_hash = sequence_hash(record.sequence)
        reason = validate_record(record, max_length)
        if reason is None:
            try:
                paths = output_paths(outdir, name, formats)
            except ValueError as exc:  # e.g. a symlink in OUTDIR that points outside it
                reason = str(exc)
        if reason is not None:
            logger.error("record %d (line %d) %s: %s", index + 1, record.line, name, reason)
            results[index] = ProteinResult(name, record.num_residues, "error", error=reason, sequence_hash=seq_hash)
            rows[name] = results[index].to_row()
        elif not overwrite and _is_complete(rows.get(name), seq_hash, paths):
            results[index] = ProteinResult.from_row(rows[name])
            results[index].reused = True
        else:
            n_chains = record.sequence.count(CHAIN_SEPARATOR) + 1
            tokens = record.num_residues + (n_chains - 1) * len(DEFAULT_LINKER)
            header = f"{record.id} {record.description}".strip()
            jobs.append(FoldJob(index, name, header, record.sequence, record.num_residues, tokens))
            # until its files are all written, an interrupted run must not count an earlier "ok" as complete
            rows[name] = ProteinResult(name, record.num_residues, "pending", sequence_hash=seq_hash).to_row()
    return results, jobs


def predict_fasta(
    fasta: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    model: Folder | None = None,
    model_source: str | os.PathLike | None = None,
    lm: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cpu_offload: bool = False,
    formats: Sequence[str] = DEFAULT_FORMATS,
    num_recycles: int | None = None,
    chunk_size: int | str | None = None,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    max_length: int | None = None,
    cpu_fallback: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> list[ProteinResult]:
    """Fold every record of ``fasta`` and write its files to ``outdir`` (see the module docstring).

    Args:
        fasta: FASTA file (optionally gzip-compressed); ``A:B`` sequences are complexes.
        outdir: output directory, created if missing.
        model: an object with ``fold(sequences, num_recycles=, chunk_size=) -> Prediction``; or give
            ``model_source`` (+ ``lm``, ``device`` (default: CUDA if available), ``dtype``, ``cpu_offload``) for
            ``esmfold_lite.load_model``, which is called only if something needs folding.
        formats: any of ``FORMATS`` ("pdb", "cif", "json", "npz", "png").
        num_recycles: recycling iterations (None: the checkpoint's default).
        chunk_size: trunk chunk size to start with (None: unchunked; "auto": from free memory and length);
            lowered on out-of-memory errors.
        max_tokens_per_batch: budget of padded positions per batch.
        max_length: records with more residues (all chains) are rejected.
        cpu_fallback: fold proteins that do not fit in GPU memory on the CPU (slow).
        overwrite: recompute proteins whose outputs are complete instead of skipping them.
        progress: show a progress bar (on a terminal).
    Returns:
        One result per record, in FASTA order.
    Raises:
        PipelineError: unreadable or empty FASTA, unusable ``outdir``, model not loadable.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if model is None and model_source is None:
        raise ValueError("give a model or a model_source")
    if max_tokens_per_batch < 1:
        raise ValueError(f"max_tokens_per_batch must be positive, got {max_tokens_per_batch}")
    records = _read_records(Path(fasta))
    outdir = _prepare_outdir(Path(outdir))
    summary_path = outdir / SUMMARY_NAME
    rows = {row["id"]: row for row in read_summary(summary_path)}  # earlier runs, kept unless recomputed
    results, jobs = _plan(records, outdir, formats, rows, max_length, overwrite)
    reused = sum(r.reused for r in results.values())
    if reused:
        logger.info("%d protein(s) already complete in %s: skipped (overwrite recomputes them)", reused, outdir)
    folding = None
    if jobs:  # load first: a model that cannot load leaves the summary untouched
        folding = BatchFolder(
            model if model is not None else _load_model(model_source, lm, device, dtype, cpu_offload),
            num_recycles, chunk_size, max_tokens_per_batch, cpu_fallback,
        )  # fmt: skip
    _save_summary(summary_path, rows)
    if folding is not None:
        try:
            _fold_all(folding, jobs, outdir, formats, rows, results, summary_path, progress)
        finally:
            if model is not None:  # leave a caller's model where it was
                folding.restore()
    ordered = [results[i] for i in range(len(records))]
    failed = sum(r.status != "ok" for r in ordered)
    logger.info("%d ok (%d skipped as complete), %d failed; summary in %s",
                len(ordered) - failed, sum(r.reused for r in ordered), failed, summary_path)  # fmt: skip
    return ordered


def _fold_all(
    folding: BatchFolder,
    jobs: list[FoldJob],
    outdir: Path,
    formats: Sequence[str],
    rows: dict[str, dict[str, object]],
    results: dict[int, ProteinResult],
    summary_path: Path,
    progress: bool,
) -> None:
    queue = sorted(jobs, key=lambda job: (job.tokens, job.index))
    bar = tqdm(total=len(queue), unit="protein", disable=None if progress else True, dynamic_ncols=True)
    with bar, logging_redirect_tqdm():
        start = 0
        while start < len(queue):
            batch = folding.next_batch(queue, start)
            start += len(batch)
            bar.set_postfix_str(f"batch {len(batch)} x L<={batch[-1].tokens}")
            for outcome in folding.fold(batch):
                result = _finish(outcome, outdir, formats)
                results[outcome.job.index] = result
                rows[result.id] = result.to_row()
            _save_summary(summary_path, rows)
            bar.update(len(batch))


def _finish(outcome: FoldOutcome, outdir: Path, formats: Sequence[str]) -> ProteinResult:
    """Write a folded protein's files; the summary row either way."""
    job = outcome.job
    result = ProteinResult(
        job.name, job.length, "error",
        seconds=outcome.seconds, error=outcome.error, notes="; ".join(job.notes),
        sequence_hash=sequence_hash(job.sequence),
    )  # fmt: skip
    if outcome.prediction is not None:
        start = time.perf_counter()
        try:
            write_protein(outdir, job.name, outcome.prediction, outcome.row, formats, job.header)
            result.status = "ok"
            result.mean_plddt = float(outcome.prediction.mean_plddt[outcome.row])
            result.ptm = float(outcome.prediction.ptm[outcome.row])
        except Exception as exc:  # e.g. a full disk: this protein fails, its files stay whole or absent
            logger.debug("writing %s failed", job.name, exc_info=True)
            result.error = f"writing outputs failed: {type(exc).__name__}: {exc}"
        result.seconds = outcome.seconds + time.perf_counter() - start
    if result.status != "ok":
        logger.error("%s: %s", job.name, result.error)
    return result


def _save_summary(path: Path, rows: dict[str, dict[str, object]]) -> None:
    try:
        write_summary(path, rows.values())
    except OSError as exc:
        raise PipelineError(f"cannot write {path}: {exc.strerror or exc}") from exc
