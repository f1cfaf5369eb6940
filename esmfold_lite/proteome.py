"""``fold_proteome``: the ``predict`` pipeline driven over Ray workers, from a laptop to a cluster, losing nothing.

The steps are ``esmfold_lite.pipeline``'s, only the driver differs (``predict_fasta`` folds in its own process):

1. Plan, streaming: every record is validated, named and checked for completeness by ``plan_record``, as in
   ``predict``. Records to fold go to a work queue on disk (``OUTDIR/.esmfold-lite/queue.sqlite``, with the names
   given out), so a FASTA of 20 million records is never held in memory.
2. Units: the queue is read longest first and cut into token-budget units (count × longest ≤
   ``max_tokens_per_batch``, linkers included); neighbours in a length-sorted queue have similar lengths, so a
   unit is a length bucket and padding stays small. Longest first puts the proteins most likely to run out of
   memory at the start and leaves short units to balance the end.
3. Workers (``proteome_workers``): one Ray actor per worker holds the model, loaded once, and folds units with
   ``predict``'s ``BatchFolder``. It returns each protein's files rendered in memory, so the workers need no shared
   file system.
4. The driver (``proteome_driver``) alone writes: each protein's files, then its completion record
   (``save_folded``), as ``predict``. A unit whose worker died (killed, OOM-killed, its node lost) is split in
   halves and retried on the workers left, and the dead worker is replaced; a protein whose worker died
   ``max_attempts`` times is marked failed with the reason. Results come only from a call that returned, so
   nothing is written twice.
5. The run state is the manifest of what is done, failed and pending: a driver killed and restarted plans again
   and folds only what is not complete; ``summary.tsv`` lists pending proteins until they are done.

Progress: a bar on a terminal, otherwise a log line per protein and every minute one with rates and ETA;
``OUTDIR/run.json`` every few seconds (rates, ETA, failures, workers), ``summary.tsv`` every minute and at the end.
Ray is imported only inside functions (``fold_proteome``, which hands it to ``proteome_workers`` and
``proteome_driver``, and the worker actor in its own process), from the ``[cluster]`` extra.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from esmfold_lite.batch_folding import FoldJob
from esmfold_lite.io.fasta import read_fasta
from esmfold_lite.io.run_state import STATE_DIR, RunState
from esmfold_lite.io.work_queue import WorkQueue
from esmfold_lite.pipeline import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_TOKENS_PER_BATCH,
    FORMATS,
    PipelineError,
    RunProgress,
    RunSettings,
    check_settings,
    interruption_of,
    open_outdir,
    output_names,
    pending_row,
    plan_record,
    run_settings,
    show_bar,
    warn_of_earlier_proteins,
)
from esmfold_lite.pipeline.names import DEFAULT_MAX_ATTEMPTS, DEFAULT_STALL_TIMEOUT_S
from esmfold_lite.proteome_driver import RESUME, Driver, RayLost
from esmfold_lite.proteome_workers import (
    LOCAL_ONLY_ENV,
    FoldWorker,
    Pool,
    connect,
    default_workers,
)

logger = logging.getLogger(__name__)

PLAN_FLUSH = 10_000  # records planned per transaction


def _plan(
    fasta: Path,
    state: RunState,
    settings: RunSettings,
    queue: WorkQueue,
    formats: Sequence[str],
    max_length: int | None,
    overwrite: bool,
) -> dict[str, int]:
    """Stream the FASTA through ``plan_record``: queue what to fold, store pending and error rows. Returns counts."""
    counts = dict(total=0, reused=0, invalid=0, jobs=0, residues=0)
    rows = []
    records, for_names = itertools.tee(read_fasta(fasta))  # advanced together: tee holds one record at most
    try:
        names = output_names((record.id for record in for_names), taken=queue.names)
        for index, (record, name) in enumerate(zip(records, names, strict=True)):
            planned = plan_record(state, settings, index, record, name, formats, max_length, overwrite)
            counts["total"] += 1
            if isinstance(planned, FoldJob):
                queue.add(planned)
                rows.append(pending_row(planned))
                counts["jobs"] += 1
                counts["residues"] += planned.length
            elif planned.reused:
                counts["reused"] += 1
            else:
                rows.append(planned.to_row())
                counts["invalid"] += 1
            if len(rows) >= PLAN_FLUSH:
                state.save(rows)
                queue.commit()
                rows = []
    except OSError as exc:
        raise PipelineError(f"cannot read FASTA file {fasta}: {exc.strerror or exc}") from exc
    if not counts["total"]:
        raise PipelineError(f"no FASTA records in {fasta} (a record starts with a '>' header line)")
    state.save(rows)
    queue.commit()
    return counts


def fold_proteome(
    fasta: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    model_source: str | os.PathLike,
    lm: str | os.PathLike | None = None,
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
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    dashboard: bool = False,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
) -> dict[str, object]:
    """Fold every record of ``fasta`` on Ray workers into ``outdir``: the same files and ``summary.tsv`` as
    ``predict_fasta`` (see the module docstring for how).

    Args:
        fasta: FASTA file, plain or gzip-compressed, read as a stream.
        outdir: output directory (one run at a time; see ``predict_fasta``).
        model_source, lm, dtype, lm_dtype, cpu_offload, formats, num_recycles, chunk_size, max_tokens_per_batch,
            max_length, cpu_fallback, overwrite, progress: as for ``predict_fasta``; the model is loaded by each
            worker (``"auto"`` dtypes are chosen there, for its device).
        ray_address: None starts Ray on this machine, reachable from this machine only (its servers listen on
            127.0.0.1; or uses the Ray this process already joined); ``"auto"``
            joins the cluster this machine belongs to (``ray start``); ``"ray://host:10001"`` connects a remote
            cluster through Ray Client.
        workers: model-holding actors (default: one per GPU of the cluster, or one on the CPU).
        gpus_per_worker: GPUs per worker, fractions allowed (default: 1 when the cluster has GPUs, else 0: CPU).
        cpus_per_worker: CPUs per worker, also its torch threads (default: 1 with GPUs, else a node's CPUs shared
            by the workers).
        max_attempts: a protein whose worker died this many times is marked failed.
        stall_timeout: seconds without progress, after Ray lost a node, while no worker can be scheduled, before the
            run stops (exit status 1, naming the lost nodes; the next run resumes). A Ray started here that dies is
            started again once instead.
        dashboard: also start Ray's dashboard (on 127.0.0.1:8265) with the local Ray; off by default, since the
            jobs API it serves runs code for whoever reaches it.
    Returns:
        The final report (what ``OUTDIR/run.json`` holds): protein counts, rates, settings, workers.
    Raises:
        PipelineError: unreadable or empty FASTA, unusable or busy ``outdir``, results of other settings there,
            a model the workers cannot load, no Ray.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if max_tokens_per_batch < 1 or max_attempts < 1 or (workers is not None and workers < 1):
        raise ValueError("max_tokens_per_batch, max_attempts and workers must be positive")
    if ray_address is None:  # before Ray is imported: the servers of the Ray started here listen on 127.0.0.1 only
        os.environ.update(LOCAL_ONLY_ENV)
    try:
        import ray
    except ImportError as exc:
        raise PipelineError("fold-proteome needs Ray: pip install 'esmfold-lite[cluster]'") from exc
    fasta = Path(fasta)
    if not fasta.is_file():
        raise PipelineError(f"cannot read FASTA file {fasta}: {'is a directory' if fasta.is_dir() else 'no such file'}")
    settings = run_settings(model_source=model_source, lm=lm, num_recycles=num_recycles, dtype=dtype, lm_dtype=lm_dtype)
    with open_outdir(outdir, overwrite) as state:
        check_settings(state, settings, overwrite)
        queue = WorkQueue(state.outdir / STATE_DIR / "queue.sqlite")
        report = None
        try:
            counts = _plan(fasta, state, settings, queue, formats, max_length, overwrite)
            warn_of_earlier_proteins(state, counts["total"], fasta)
            if counts["reused"]:
                logger.info("%d protein(s) already complete in %s: skipped", counts["reused"], state.outdir)
            report = RunProgress(
                state, settings, "fold-proteome", counts["total"], counts["jobs"], counts["residues"],
                counts["reused"], show_bar(progress),
            )  # fmt: skip
            report.invalid = counts["invalid"]
            if counts["jobs"]:
                started_ray = connect(ray, ray_address, dashboard)
                try:
                    n, gpus, cpus = default_workers(ray, workers, gpus_per_worker, cpus_per_worker)
                    arguments = (str(model_source), None if lm is None else str(lm), gpus > 0, dtype, lm_dtype,
                                 cpu_offload, num_recycles, chunk_size, max_tokens_per_batch, cpu_fallback,
                                 tuple(formats), max(1, int(cpus)))  # fmt: skip
                    options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0, "max_concurrency": 1}
                    pools = [Pool(ray, ray.remote(FoldWorker), options, arguments, n)]
                    logger.info("%d proteins to fold on %d worker(s) (%g CPU, %g GPU each)",
                                counts["jobs"], n, cpus, gpus)  # fmt: skip
                    driver = Driver(ray, pools[0], state, settings, report, max_attempts, stall_timeout, started_ray)
                    try:
                        while True:
                            try:
                                driver.run(queue.units(max_tokens_per_batch))
                                break
                            except RayLost as lost:
                                if not started_ray or len(pools) > 1:  # not ours to restart, or restarted once
                                    once = "; it had been restarted once already" if len(pools) > 1 else ""
                                    raise PipelineError(f"{lost}{once}; {RESUME}") from lost
                                logger.warning("%s; starting a fresh local Ray and carrying on (once)", lost)
                                pools[-1].close()
                                ray.shutdown()
                                connect(ray, None, dashboard)
                                pools.append(Pool(ray, ray.remote(FoldWorker), options, arguments, n))
                                driver.restart_with(pools[-1])
                    finally:
                        pools[-1].close()
                finally:
                    if started_ray:
                        ray.shutdown()
        except BaseException as exc:
            if report is not None and report.ok + report.failed:  # else nothing was produced: OUTDIR stays as it was
                with contextlib.suppress(Exception):  # the first error is the one to report
                    report.finish("interrupted" if interruption_of(exc) else "failed")
            raise
        finally:
            queue.close()
        return report.finish("finished")
