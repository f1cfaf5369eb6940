"""FASTA → structure files for many proteins, robust to bad records, out-of-memory errors, crashes and reruns.

One pipeline, two drivers: ``predict_fasta`` (here) folds in this process; ``esmfold_lite.proteome`` folds on Ray
workers. Both go through the same steps, defined here once:

- ``run_settings``: what makes the numbers (checkpoint and LM fingerprints, recycles, dtype, package version).
  An OUTDIR holds results of one set of settings: a run with other settings stops with a message, unless
  ``overwrite`` recomputes (see ``check_settings``).
- ``open_outdir``: one run per OUTDIR at a time (a lock); the state that records what is complete
  (``io.run_state``).
- ``plan_record``: validation, the output name (record ids made safe and unique by ``io.fasta.unique_ids``; every
  file lies directly in OUTDIR, a symlink there is replaced, never written through) and whether the protein is
  already complete; gives a ``ProteinResult`` (error or complete) or a ``FoldJob``.
- ``render_outcome`` (where the folding ran): a folded job's files rendered in memory, as ``FoldedProtein``.
- ``save_folded`` (in the driver): write the files atomically, then commit each protein's completion record
  (sizes, mtimes, sha256 of its files): a protein is complete only once its record says so. A full or failing disk
  (``io.atomic.is_disk_error``) stops the run with a PipelineError naming the file; the proteins not recorded yet
  stay ``pending`` and are folded by the next run.
- ``RunProgress``: a progress bar on a terminal, else one log line per protein; rates, ETA, ``OUTDIR/run.json``,
  and ``summary.tsv`` (one row per protein: ``SUMMARY_COLUMNS``).

``predict_fasta`` batches sequences sorted by length (shortest first) so that ``batch size × longest length`` (the
padded token count, chain linkers included) stays within ``max_tokens_per_batch``; on out-of-memory errors batches
are split, chunk sizes lowered and (``cpu_fallback``) the CPU used, as ``batch_folding`` describes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, MutableSet, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from esmfold_lite.batch_folding import BatchFolder, Folder, FoldJob, FoldOutcome
from esmfold_lite.fold.chains import CHAIN_SEPARATOR, DEFAULT_LINKER
from esmfold_lite.fold.precision import AUTO
from esmfold_lite.io.atomic import atomic_write_text, is_disk_error, write_failure
from esmfold_lite.io.fasta import FastaRecord, iter_unique_ids, read_fasta, validate_record
from esmfold_lite.io.outputs import FORMAT_SUFFIXES, output_paths, render_protein, write_files, write_summary
from esmfold_lite.io.run_state import RESUME_HINT, OutdirError, RunState, file_record, open_run_state
from esmfold_lite.lm.load import as_dtype
from esmfold_lite.weights.fingerprint import checkpoint_fingerprint, language_model_fingerprint

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = tuple(FORMAT_SUFFIXES)
DEFAULT_FORMATS: tuple[str, ...] = ("pdb", "json")
DEFAULT_MAX_TOKENS_PER_BATCH = 1024
SUMMARY_NAME = "summary.tsv"
RUN_REPORT_NAME = "run.json"
# names a protein never gets, so that its files cannot be the run's own (a protein "run" is named "run_2")
_PAE_STEM = FORMAT_SUFFIXES["pae"].removesuffix(".json").lower()
RESERVED_NAMES = frozenset(Path(name).stem.lower() for name in (SUMMARY_NAME, RUN_REPORT_NAME))


class PipelineError(Exception):
    """A problem that stops the whole run (unreadable FASTA, no records, unusable or busy OUTDIR, results of other
    settings in OUTDIR, a damaged run state, a full disk, model not loadable)."""


def write_error(path: str | os.PathLike | None, exc: OSError) -> PipelineError:
    """The PipelineError of a failed write of ``path`` that stops the run, naming the file and what happened."""
    return PipelineError(write_failure(path, exc) + (f"; {RESUME_HINT}" if is_disk_error(exc) else ""))


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
        )


def sequence_hash(sequence: str) -> str:
    """First 16 hex digits of the SHA-256 of a (multi-chain) sequence: identifies what an output was folded from."""
    return hashlib.sha256(sequence.encode()).hexdigest()[:16]


# --- settings ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """What determines a run's numbers, as JSON-able ``values``, and its short ``digest``."""

    values: dict[str, object]
    digest: str


def _model_fingerprint(model: object) -> dict[str, object]:
    """A model object's identity without hashing all its weights: class, tensor names/shapes/dtypes and up to 64
    evenly spaced values of each tensor."""
    digest = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].cpu()
            digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
            digest.update(sample.float().numpy().tobytes() if sample.is_floating_point() else sample.numpy().tobytes())
    return {"object": type(model).__qualname__, "tensors": digest.hexdigest()[:32]}


def _dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """``torch.bfloat16``, ``"bf16"``, ``"bfloat16"`` -> ``"bfloat16"``; ``"auto"`` and None stay."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == AUTO):
        return None if dtype is None else AUTO
    return str(as_dtype(dtype)).removeprefix("torch.")


def run_settings(
    model: Folder | None = None,
    model_source: str | os.PathLike | None = None,
    lm: str | os.PathLike | None = None,
    num_recycles: int | None = None,
    dtype: torch.dtype | str | None = None,
    lm_dtype: torch.dtype | str | None = None,
) -> RunSettings:
    """The settings that make a run's numbers: the model (a checkpoint's fingerprint, cheap even for gigabytes, or a
    model object's), its LM, ``num_recycles``, ``dtype`` and ``lm_dtype`` as asked (``"auto"`` stays ``"auto"``)
    and the esmfold_lite version.

    Device, chunk size, LM offloading and batching change results only at the level of floating-point rounding and
    are not part of them.
    """
    from esmfold_lite import __version__  # late: the package's __init__ imports this module

    values = {
        "esmfold_lite": __version__,
        "model": _model_fingerprint(model) if model is not None else checkpoint_fingerprint(model_source),
        "lm": None if model is not None else language_model_fingerprint(model_source, lm),
        "num_recycles": num_recycles,
        "dtype": _dtype_name(dtype),
        "lm_dtype": _dtype_name(lm_dtype),
    }
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    return RunSettings(values, digest)


def check_settings(state: RunState, settings: RunSettings, overwrite: bool) -> None:
    """Stop if OUTDIR holds results made with other settings, unless ``overwrite`` (then they are recomputed as
    their records come up, and rows of other records are marked ``stale``)."""
    conflict = state.settings_conflict(settings.digest, settings.values)
    if conflict is not None and not overwrite:
        raise PipelineError(
            f"output directory {state.outdir}: {conflict}. Use --overwrite (overwrite=True) to recompute them with "
            "the new settings, or write to another output directory"
        )
    if conflict is not None:
        logger.warning("%s; overwrite: recomputing with the new settings", conflict)
    state.use_settings(settings.digest, settings.values)


@contextlib.contextmanager
def open_outdir(outdir: str | os.PathLike, overwrite: bool = False) -> Iterator[RunState]:
    """``io.run_state.open_run_state`` with its errors as ``PipelineError``; ``overwrite`` (every protein is folded
    again) replaces a damaged run state."""
    try:
        with open_run_state(outdir, replace_damaged=overwrite) as state:
            yield state
    except OutdirError as exc:
        raise PipelineError(str(exc)) from exc


# --- records -----------------------------------------------------------------------------------------------------


def read_records(fasta: Path) -> list[FastaRecord]:
    """All records of ``fasta``; PipelineError if it cannot be read or holds none."""
    try:
        records = list(read_fasta(fasta))
    except OSError as exc:
        raise PipelineError(f"cannot read FASTA file {fasta}: {exc.strerror or exc}") from exc
    if not records:
        raise PipelineError(f"no FASTA records in {fasta} (a record starts with a '>' header line)")
    return records


def output_names(ids: Iterable[str], taken: MutableSet[str] | None = None) -> Iterator[str]:
    """Safe, distinct output names for record ids, in order (``io.fasta.iter_unique_ids``), never one of
    ``RESERVED_NAMES``. ``taken``: an empty set-like to use instead of an in-memory set (for millions of ids).

    An id ending in ``_predicted_aligned_error_v1`` gets a ``_`` appended first: its ``.json`` would otherwise be
    the AlphaFold DB PAE file of the protein named by the rest of it."""
    taken = set() if taken is None else taken
    taken |= RESERVED_NAMES
    return iter_unique_ids((id + "_" if id.lower().endswith(_PAE_STEM) else id for id in ids), taken=taken)


def plan_record(
    state: RunState,
    settings: RunSettings,
    index: int,
    record: FastaRecord,
    name: str,
    formats: Sequence[str],
    max_length: int | None,
    overwrite: bool,
) -> ProteinResult | FoldJob:
    """What to do with record ``index`` (0-based, for messages) named ``name``: a ``ProteinResult`` for an invalid
    record (``error``, logged) or a complete one (``reused``), else a ``FoldJob``."""
    seq_hash = sequence_hash(record.sequence)
    reason = validate_record(record, max_length)
    if reason is None:
        try:
            paths = output_paths(state.outdir, name, formats)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        logger.error("record %d (line %d) %s: %s", index + 1, record.line, name, reason)
        return ProteinResult(name, record.num_residues, "error", error=reason, sequence_hash=seq_hash)
    if not overwrite:
        row = state.complete_row(name, seq_hash, settings.digest, paths)
        if row is not None:
            complete = ProteinResult.from_row(row)
            complete.reused = True
            return complete
    n_chains = record.sequence.count(CHAIN_SEPARATOR) + 1
    tokens = record.num_residues + (n_chains - 1) * len(DEFAULT_LINKER)
    header = f"{record.id} {record.description}".strip()
    return FoldJob(index, name, header, record.sequence, record.num_residues, tokens)


def pending_row(job: FoldJob) -> dict[str, object]:
    """The row of a protein about to be folded: until its files are all written, an interrupted run must not count
    an earlier result as complete."""
    return ProteinResult(job.name, job.length, "pending", sequence_hash=sequence_hash(job.sequence)).to_row()


# --- folded proteins ---------------------------------------------------------------------------------------------


@dataclass
class FoldedProtein:
    """A folded or failed job on its way from the folding process to the driver, its files already rendered."""

    job: FoldJob
    files: dict[str, bytes] = field(default_factory=dict)  # {format: content}; empty when it failed
    mean_plddt: float | None = None
    ptm: float | None = None
    seconds: float = 0.0
    error: str = ""


def render_outcome(outcome: FoldOutcome, formats: Sequence[str]) -> FoldedProtein:
    """Render a folded job's files (``io.outputs.render_protein``); a rendering error fails only this protein."""
    job = outcome.job
    folded = FoldedProtein(job, seconds=outcome.seconds, error=outcome.error)
    if outcome.prediction is not None:
        start = time.perf_counter()
        try:
            folded.files = render_protein(outcome.prediction, outcome.row, job.name, formats, job.header)
            folded.mean_plddt = float(outcome.prediction.mean_plddt[outcome.row])
            folded.ptm = float(outcome.prediction.ptm[outcome.row])
        except Exception as exc:
            logger.debug("rendering %s failed", job.name, exc_info=True)
            folded.files, folded.error = {}, f"rendering outputs failed: {type(exc).__name__}: {exc}"
        folded.seconds += time.perf_counter() - start
    return folded


def save_folded(state: RunState, settings: RunSettings, folded: Sequence[FoldedProtein]) -> list[ProteinResult]:
    """Write the files of folded proteins atomically, then commit their rows in one transaction: for an ok protein
    the row is its completion record (settings digest, size/mtime/sha256 of each file).

    A file that cannot be written fails its protein (``error``), unless the disk is full or failing: then no other
    write would succeed either, so PipelineError stops the run and none of these rows is committed (the proteins
    stay ``pending``; their files, whole or absent, are written again by the next run)."""
    results, rows = [], []
    for item in folded:
        job = item.job
        result = ProteinResult(
            job.name, job.length, "error", seconds=item.seconds, error=item.error, notes="; ".join(job.notes),
            sequence_hash=sequence_hash(job.sequence),
        )  # fmt: skip
        records = {}
        if item.files:
            start = time.perf_counter()
            try:
                paths = write_files(state.outdir, job.name, item.files)
                records = {fmt: file_record(paths[fmt], content) for fmt, content in item.files.items()}
                result.status, result.error = "ok", ""
                result.mean_plddt, result.ptm = item.mean_plddt, item.ptm
            except Exception as exc:  # this protein fails, its files stay whole or absent
                logger.debug("writing %s failed", job.name, exc_info=True)
                if is_disk_error(exc):
                    raise write_error(exc.filename, exc) from exc
                result.error = "writing outputs failed: " + (
                    write_failure(exc.filename, exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
                )
            result.seconds = item.seconds + time.perf_counter() - start
            state.produced = True
        results.append(result)
        rows.append({**result.to_row(), "settings": settings.digest, "files": records})
    state.save(rows)
    return results


# --- progress ----------------------------------------------------------------------------------------------------


class RunProgress:
    """Progress of a run: a bar on a terminal, otherwise one log line per protein; rates, ETA and the final line;
    ``OUTDIR/run.json`` (``write_report``) and ``OUTDIR/summary.tsv`` (``write_summary``)."""

    def __init__(
        self,
        state: RunState,
        settings: RunSettings,
        command: str,
        total: int,
        to_fold: int,
        residues_to_fold: int,
        reused: int,
        bar: bool,
    ) -> None:
        self.state, self.settings, self.command = state, settings, command
        self.total, self.to_fold, self.residues_to_fold, self.reused = total, to_fold, residues_to_fold, reused
        self.ok = self.failed = self.residues = 0
        self.invalid = 0  # records rejected before folding
        self.started = time.time()
        self.clock = time.perf_counter()
        self.extra: dict[str, object] = {}  # more fields for run.json (the Ray driver's workers)
        self.bar = tqdm(total=to_fold, unit="protein", dynamic_ncols=True, disable=not bar)
        self.log_each = logging.INFO if self.bar.disable else logging.DEBUG

    def start_folding(self) -> None:
        """Start the clock of the rates (after the model was loaded)."""
        self.clock = time.perf_counter()

    def add(self, results: Sequence[ProteinResult]) -> None:
        """Count folded (or failed) proteins and log one line each."""
        for r in results:
            self.residues += r.length
            if r.status == "ok":
                self.ok += 1
                logger.log(self.log_each, "%s: %d residues, mean pLDDT %.1f, pTM %.3f, %.1f s",
                           r.id, r.length, r.mean_plddt, r.ptm, r.seconds or 0.0)  # fmt: skip
            else:
                self.failed += 1
                logger.error("%s: %d residues, failed after %.1f s: %s", r.id, r.length, r.seconds or 0.0, r.error)
        self.bar.update(len(results))
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "")

    def stats(self) -> dict[str, object]:
        elapsed = time.perf_counter() - self.clock
        folded = self.ok + self.failed
        residues_per_s = self.residues / elapsed if elapsed > 0 else 0.0
        remaining = self.residues_to_fold - self.residues
        return {
            "proteins": {
                "total": self.total, "ok": self.ok + self.reused, "failed": self.failed + self.invalid,
                "skipped_complete": self.reused, "folded": folded, "pending": self.to_fold - folded,
            },
            "residues_folded": self.residues,
            "proteins_per_s": round(folded / elapsed, 4) if elapsed > 0 else 0.0,
            "residues_per_s": round(residues_per_s, 2),
            "eta_s": round(remaining / residues_per_s, 1) if residues_per_s > 0 and remaining > 0 else None,
            "elapsed_s": round(time.time() - self.started, 2),
        }  # fmt: skip

    def write_report(self, status: str = "running") -> dict[str, object]:
        """Write ``OUTDIR/run.json`` (status, counts, rates, ETA, settings, ``extra``) and return what it holds."""
        report = {
            "command": self.command, "status": status, "outdir": str(self.state.outdir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.stats(), **self.extra,
            "settings": self.settings.values,
        }  # fmt: skip
        path = self.state.outdir / RUN_REPORT_NAME
        try:
            atomic_write_text(path, json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise write_error(path, exc) from exc
        return report

    def write_summary(self) -> None:
        path = self.state.outdir / SUMMARY_NAME
        try:
            write_summary(path, self.state.summary_rows(self.settings.digest))
        except OSError as exc:
            raise write_error(path, exc) from exc
        self.state.produced = True

    def finish(self, status: str) -> dict[str, object]:
        """Close the bar, write the summary and the final report, log the final line; returns the report."""
        self.bar.close()
        self.write_summary()
        s = self.write_report(status)
        p = s["proteins"]
        logger.info(
            "%s: %d proteins in %.1f s: %d ok (%d skipped as complete), %d failed; %.2f proteins/s, %.0f residues/s "
            "folded; summary in %s",
            status, p["total"], s["elapsed_s"], p["ok"], p["skipped_complete"], p["failed"], s["proteins_per_s"],
            s["residues_per_s"], self.state.outdir / SUMMARY_NAME,
        )  # fmt: skip
        return s


def show_bar(progress: bool) -> bool:
    """A progress bar only on a terminal (stderr), and only if asked for."""
    return progress and sys.stderr.isatty()


# --- predict -----------------------------------------------------------------------------------------------------


def load_folder(
    source: str | os.PathLike, lm=None, device=None, dtype=None, lm_dtype=None, cpu_offload: bool = False
) -> Folder:
    """``esmfold_lite.load_model`` for folding (device: CUDA if available; ``cpu_offload``: the LM on the CPU), its
    errors as one-line PipelineError. The loader logs the dtypes it chose."""
    import esmfold_lite  # late: the package's __init__ imports this module

    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loading the model from %s onto %s", source, device)
    try:
        return esmfold_lite.load_model(
            source, lm=lm, device=device, dtype=dtype, lm_dtype=lm_dtype, lm_device="cpu" if cpu_offload else None
        )
    except Exception as exc:  # the loader's own message names the problem; keep it on one line
        logger.debug("loading the model failed", exc_info=True)
        raise PipelineError(f"cannot load the model from {source}: {exc}") from exc


def predict_fasta(
    fasta: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    model: Folder | None = None,
    model_source: str | os.PathLike | None = None,
    lm: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    lm_dtype: torch.dtype | str | None = None,
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
        outdir: output directory, created if missing (and removed again if the run fails before writing anything).
            One run at a time: a second run on it raises PipelineError at once.
        model: an object with ``fold(sequences, num_recycles=, chunk_size=) -> Prediction``; or give
            ``model_source`` (+ ``lm``, ``device`` (default: CUDA if available), ``dtype`` and ``lm_dtype`` (a
            dtype, its name, ``"auto"`` or None, as for ``load_model``), ``cpu_offload``) for
            ``esmfold_lite.load_model``, which is called only if something needs folding.
        formats: any of ``FORMATS`` ("pdb", "cif", "json", "pae", "npz", "png").
        num_recycles: recycling iterations (None: the checkpoint's default).
        chunk_size: trunk chunk size to start with (None: unchunked; "auto": from free memory and length);
            lowered on out-of-memory errors.
        max_tokens_per_batch: budget of padded positions per batch.
        max_length: records with more residues (all chains) are rejected.
        cpu_fallback: fold proteins that do not fit in GPU memory on the CPU (slow).
        overwrite: recompute proteins whose outputs are complete instead of skipping them; needed to reuse an
            OUTDIR whose results were made with other settings (``run_settings``).
        progress: show a progress bar (only on a terminal; elsewhere one log line per protein).
    Returns:
        One result per record, in FASTA order.
    Raises:
        PipelineError: unreadable or empty FASTA, unusable or busy ``outdir``, results of other settings in
            ``outdir`` or a damaged run state (without ``overwrite``), a full or failing disk, model not loadable.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if model is None and model_source is None:
        raise ValueError("give a model or a model_source")
    if max_tokens_per_batch < 1:
        raise ValueError(f"max_tokens_per_batch must be positive, got {max_tokens_per_batch}")
    records = read_records(Path(fasta))
    settings = run_settings(model, model_source, lm, num_recycles, dtype, lm_dtype)
    with open_outdir(outdir, overwrite) as state:
        check_settings(state, settings, overwrite)
        results: dict[int, ProteinResult] = {}
        jobs: list[FoldJob] = []
        rows = []
        for index, (record, name) in enumerate(zip(records, output_names(r.id for r in records), strict=True)):
            planned = plan_record(state, settings, index, record, name, formats, max_length, overwrite)
            if isinstance(planned, FoldJob):
                jobs.append(planned)
                rows.append(pending_row(planned))
            else:
                results[index] = planned
                if not planned.reused:
                    rows.append(planned.to_row())
        reused = sum(r.reused for r in results.values())
        if reused:
            logger.info("%d protein(s) already complete in %s: skipped (overwrite recomputes them)", reused, outdir)
        folding = None
        if jobs:  # load first: a model that cannot load leaves OUTDIR untouched
            folding = BatchFolder(
                model if model is not None else load_folder(model_source, lm, device, dtype, lm_dtype, cpu_offload),
                num_recycles, chunk_size, max_tokens_per_batch, cpu_fallback,
            )  # fmt: skip
        state.save(rows)
        report = RunProgress(
            state, settings, "predict", len(records), len(jobs), sum(job.length for job in jobs), reused,
            show_bar(progress),
        )  # fmt: skip
        report.invalid = sum(r.status == "error" for r in results.values())
        report.write_summary()
        try:
            if folding is not None:
                try:
                    _fold_all(folding, jobs, formats, state, settings, results, report)
                finally:
                    if model is not None:  # leave a caller's model where it was
                        folding.restore()
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the first error is the one to report
                report.finish("failed" if isinstance(exc, Exception) else "interrupted")
            raise
        report.finish("finished")
    return [results[i] for i in range(len(records))]


def _fold_all(
    folding: BatchFolder,
    jobs: list[FoldJob],
    formats: Sequence[str],
    state: RunState,
    settings: RunSettings,
    results: dict[int, ProteinResult],
    report: RunProgress,
) -> None:
    queue = sorted(jobs, key=lambda job: (job.tokens, job.index))
    report.start_folding()
    with logging_redirect_tqdm():
        start = 0
        while start < len(queue):
            batch = folding.next_batch(queue, start)
            start += len(batch)
            folded = [render_outcome(outcome, formats) for outcome in folding.fold(batch)]
            for item, result in zip(folded, save_folded(state, settings, folded), strict=True):
                results[item.job.index] = result
            report.add([results[item.job.index] for item in folded])
            report.write_summary()
            report.write_report()
