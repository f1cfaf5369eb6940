"""``predict_fasta``: the pipeline's in-process driver (``esmfold_lite.proteome`` is the Ray one)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from esmfold_lite.batch_folding import BatchFolder, Folder, FoldJob
from esmfold_lite.fold_progress import on_fold_step
from esmfold_lite.io.run_state import RunState
from esmfold_lite.pipeline.errors import PipelineError, interruption_of
from esmfold_lite.pipeline.folded import render_outcome, save_folded
from esmfold_lite.pipeline.names import DEFAULT_FORMATS, DEFAULT_MAX_TOKENS_PER_BATCH, FORMATS
from esmfold_lite.pipeline.progress import RunProgress, show_bar
from esmfold_lite.pipeline.records import (
    ProteinResult,
    output_names,
    pending_row,
    plan_record,
    read_records,
    warn_of_earlier_proteins,
)
from esmfold_lite.pipeline.settings import RunSettings, check_settings, open_outdir, run_settings

logger = logging.getLogger(__name__)



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
    """Fold every record of ``fasta`` and write its files to ``outdir`` (see ``esmfold_lite.pipeline``).

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
        warn_of_earlier_proteins(state, len(records), fasta)
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
                report.finish("interrupted" if interruption_of(exc) else "failed")
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
            with on_fold_step(report.fold_steps(batch, folding.planned_peak_bytes(batch))):
                outcomes = folding.fold(batch)
            folded = [render_outcome(outcome, formats) for outcome in outcomes]
            for item, result in zip(folded, save_folded(state, settings, folded), strict=True):
                results[item.job.index] = result
            report.add([results[item.job.index] for item in folded])
            report.write_summary()
            report.write_report()
