"""Folded proteins: their files rendered where they were folded (``render_outcome``), then written and recorded
as complete by the driver (``save_folded``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from esmfold_lite.io.atomic import is_disk_error, write_failure
from esmfold_lite.pipeline.batching import FoldJob, FoldOutcome
from esmfold_lite.pipeline.errors import write_error
from esmfold_lite.pipeline.outputs import render_protein, write_files
from esmfold_lite.pipeline.records import ProteinResult, sequence_hash
from esmfold_lite.pipeline.run_state import RunState, file_record
from esmfold_lite.pipeline.settings import RunSettings

logger = logging.getLogger(__name__)


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
    """Render a folded job's files (``pipeline.outputs.render_protein``); a rendering error fails only this protein."""
    job = outcome.job
    folded = FoldedProtein(job, seconds=outcome.seconds, error=outcome.error)
    if outcome.prediction is not None:
        start = time.perf_counter()
        try:
            folded.files = render_protein(outcome.prediction, outcome.row, job.name, formats, job.header, job.notes)
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
            sequence_hash=sequence_hash(job.sequence), header=job.header,
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
