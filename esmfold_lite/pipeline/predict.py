"""``predict_fasta``: the pipeline's in-process driver (``esmfold_lite.pipeline.proteome`` is the Ray one)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from esmfold_lite.fold_progress import on_fold_step
from esmfold_lite.pipeline.batching import BatchFolder, FoldJob
from esmfold_lite.pipeline.engine import FoldingEngine
from esmfold_lite.pipeline.esmfold_engine import ESMFoldEngine, Folder
from esmfold_lite.pipeline.folded import render_outcome, save_folded
from esmfold_lite.pipeline.options import FoldingOptions
from esmfold_lite.pipeline.progress import RunProgress, show_bar
from esmfold_lite.pipeline.records import (
    ProteinResult,
    fasta_records,
    output_names,
    pending_row,
    plan_record,
    warn_of_earlier_proteins,
)
from esmfold_lite.pipeline.run_state import RunState
from esmfold_lite.pipeline.settings import RunSettings, check_settings, open_outdir, run_settings

logger = logging.getLogger(__name__)


def predict_fasta(
    fasta: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    options: FoldingOptions | None = None,
    model: Folder | None = None,
    engine: FoldingEngine | None = None,
    device: str | torch.device | None = None,
    **changes: object,
) -> list[ProteinResult]:
    """Fold every record of ``fasta`` and write its files to ``outdir`` (see ``esmfold_lite.pipeline``).

    Args:
        fasta: FASTA file (optionally gzip-compressed); ``A:B`` sequences are complexes.
        outdir: output directory, created if missing (and removed again if the run fails before writing anything).
            One run at a time: a second run on it raises PipelineError at once.
        options, changes: the run's ``FoldingOptions``: ``options`` (default: the defaults) with the keyword
            arguments ``changes`` to its fields (``model_source=``, ``formats=``, ``num_recycles=``, ...).
        model: an object with ``fold(sequences, num_recycles=, chunk_size=) -> Prediction``, instead of
            ``options.model_source`` (``esmfold_lite.load_model``, called only if something needs folding).
        engine: another ``FoldingEngine`` than ESMFold (then ``model`` and the ESMFold options are not used).
        device: where ``options.model_source`` is loaded (default: CUDA if available).
    Returns:
        One result per record, in FASTA order.
    Raises:
        ValueError: a bad option (``FoldingOptions``), no model or ``model_source``, both a model and an engine.
        PipelineError: unreadable or empty FASTA, unusable or busy ``outdir``, results of other settings in
            ``outdir`` or a damaged run state (without ``overwrite``), a full or failing disk, model not loadable.
    """
    options = FoldingOptions.of(options, **changes)
    if engine is not None and model is not None:
        raise ValueError("give a model or an engine, not both")
    caller_model = engine is not None or model is not None  # left where it was after a CPU fallback
    engine = engine if engine is not None else ESMFoldEngine(options, model)
    records = list(fasta_records(Path(fasta)))
    settings = run_settings(engine)
    with open_outdir(outdir, options.overwrite) as state:
        check_settings(state, settings, options.overwrite)
        results: dict[int, ProteinResult] = {}
        jobs: list[FoldJob] = []
        rows = []
        for index, (record, name) in enumerate(zip(records, output_names(r.id for r in records), strict=True)):
            planned = plan_record(state, settings, index, record, name, options)
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
        if jobs:  # load first: a model that cannot load leaves OUTDIR untouched
            engine.load(device)
        state.save(rows)
        warn_of_earlier_proteins(state, len(records), fasta)
        report = RunProgress(
            state, settings, "predict", len(records), len(jobs), sum(job.length for job in jobs), reused,
            show_bar(options.progress),
        )  # fmt: skip
        report.invalid = sum(r.status == "error" for r in results.values())
        report.write_summary()
        try:
            if jobs:
                folding = BatchFolder(engine, options.chunk_size, options.max_tokens_per_batch, options.cpu_fallback)
                try:
                    _fold_all(folding, jobs, options.formats, state, settings, results, report)
                finally:
                    if caller_model:
                        folding.restore()
        except BaseException as exc:
            report.stopped(exc)
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
