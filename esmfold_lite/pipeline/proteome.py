"""``fold_proteome``: the ``predict`` pipeline driven over Ray workers, from a laptop to a cluster, losing nothing.

The steps are ``esmfold_lite.pipeline``'s, only the driver differs (``predict_fasta`` folds in its own process):

1. Plan, streaming: every record is validated, named and checked for completeness by ``plan_record``, as in
   ``predict``. Records to fold go to a work queue on disk (``OUTDIR/.esmfold-lite/queue.sqlite``, with the names
   given out), so a FASTA of 20 million records is never held in memory.
2. Units: the queue is read longest first and cut into token-budget units (count × longest ≤
   ``max_tokens_per_batch``, linkers included); neighbours in a length-sorted queue have similar lengths, so a
   unit is a length bucket and padding stays small. Longest first puts the proteins most likely to run out of
   memory at the start and leaves short units to balance the end.
3. Workers (``ray_workers``): one Ray actor per worker holds the engine (``FoldingEngine``: the model), loaded once,
   and folds units with ``predict``'s ``BatchFolder``. It returns each protein's files rendered in memory, so the
   workers need no shared file system.
4. The driver (``ray_driver``) alone writes: each protein's files, then its completion record
   (``save_folded``), as ``predict``. A unit whose worker died (killed, OOM-killed, its node lost) is split in
   halves and retried on the workers left, and the dead worker is replaced; a protein whose worker died
   ``max_attempts`` times is marked failed with the reason. Results come only from a call that returned, so
   nothing is written twice.
5. The run state is the manifest of what is done, failed and pending: a driver killed and restarted plans again
   and folds only what is not complete; ``summary.tsv`` lists pending proteins until they are done.

Progress: a bar on a terminal, otherwise a log line per protein and every minute one with rates and ETA;
``OUTDIR/run.json`` every few seconds (rates, ETA, failures, workers), ``summary.tsv`` every minute and at the end.
Ray is imported only inside functions (``fold_proteome``, which hands it to ``ray_workers`` and
``ray_driver``, and the worker actor in its own process), from the ``[cluster]`` extra.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from esmfold_lite.io.fasta import FastaRecord
from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.engine import FoldingEngine
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.esmfold_engine import ESMFoldEngine
from esmfold_lite.pipeline.names import DEFAULT_MAX_ATTEMPTS, DEFAULT_STALL_TIMEOUT_S
from esmfold_lite.pipeline.options import FoldingOptions
from esmfold_lite.pipeline.progress import RunProgress, show_bar
from esmfold_lite.pipeline.ray_driver import RESUME, Driver, RayLost
from esmfold_lite.pipeline.ray_workers import (
    LOCAL_ONLY_ENV,
    FoldWorker,
    Pool,
    connect,
    default_workers,
)
from esmfold_lite.pipeline.records import (
    fasta_records,
    output_names,
    pending_row,
    plan_record,
    warn_of_earlier_proteins,
)
from esmfold_lite.pipeline.run_state import STATE_DIR, RunState
from esmfold_lite.pipeline.settings import RunSettings, check_settings, open_outdir, run_settings
from esmfold_lite.pipeline.work_queue import WorkQueue

logger = logging.getLogger(__name__)

PLAN_FLUSH = 10_000  # records planned per transaction


def _plan(
    records: Iterator[FastaRecord],
    state: RunState,
    settings: RunSettings,
    queue: WorkQueue,
    options: FoldingOptions,
) -> dict[str, int]:
    """Stream the records through ``plan_record``: queue what to fold, store pending and error rows. Returns counts."""
    counts = dict(total=0, reused=0, invalid=0, jobs=0, residues=0)
    rows = []
    records, for_names = itertools.tee(records)  # advanced together: tee holds one record at most
    names = output_names((record.id for record in for_names), taken=queue.names)
    for index, (record, name) in enumerate(zip(records, names, strict=True)):
        planned = plan_record(state, settings, index, record, name, options)
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
    state.save(rows)
    queue.commit()
    return counts


def fold_proteome(
    fasta: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    options: FoldingOptions | None = None,
    engine: FoldingEngine | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    dashboard: bool = False,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
    **changes: object,
) -> dict[str, object]:
    """Fold every record of ``fasta`` on Ray workers into ``outdir``: the same files and ``summary.tsv`` as
    ``predict_fasta`` (see the module docstring for how).

    Args:
        fasta: FASTA file, plain or gzip-compressed, read as a stream.
        outdir: output directory (one run at a time; see ``predict_fasta``).
        options, changes: the run's ``FoldingOptions``, as for ``predict_fasta`` (``model_source=``, ``formats=``,
            ...); the model is loaded by each worker (``"auto"`` dtypes are chosen there, for its device).
        engine: another ``FoldingEngine`` than ESMFold, picklable until loaded: each worker loads its copy.
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
        ValueError: a bad option (``FoldingOptions``), no ``model_source``, ``max_attempts`` or ``workers`` below 1.
        PipelineError: unreadable or empty FASTA, unusable or busy ``outdir``, results of other settings there,
            a model the workers cannot load, no Ray.
    """
    options = FoldingOptions.of(options, **changes)
    engine = engine if engine is not None else ESMFoldEngine(options)
    if max_attempts < 1 or (workers is not None and workers < 1):
        raise ValueError("max_attempts and workers must be positive")
    if ray_address is None:  # before Ray is imported: the servers of the Ray started here listen on 127.0.0.1 only
        os.environ.update(LOCAL_ONLY_ENV)
    try:
        import ray
    except ImportError as exc:
        raise PipelineError("fold-proteome needs Ray: pip install 'esmfold-lite[cluster]'") from exc
    records = fasta_records(Path(fasta))
    records = itertools.chain([next(records)], records)  # a FASTA that cannot be read or is empty stops the run here
    settings = run_settings(engine)
    with open_outdir(outdir, options.overwrite) as state:
        check_settings(state, settings, options.overwrite)
        queue = WorkQueue(state.outdir / STATE_DIR / "queue.sqlite")
        report = None
        try:
            counts = _plan(records, state, settings, queue, options)
            warn_of_earlier_proteins(state, counts["total"], fasta)
            if counts["reused"]:
                logger.info("%d protein(s) already complete in %s: skipped", counts["reused"], state.outdir)
            report = RunProgress(
                state, settings, "fold-proteome", counts["total"], counts["jobs"], counts["residues"],
                counts["reused"], show_bar(options.progress),
            )  # fmt: skip
            report.invalid = counts["invalid"]
            if counts["jobs"]:
                started_ray = connect(ray, ray_address, dashboard)
                try:
                    n, gpus, cpus = default_workers(ray, workers, gpus_per_worker, cpus_per_worker)
                    arguments = (engine, options, gpus > 0, max(1, int(cpus)))
                    actor = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0, "max_concurrency": 1}
                    pools = [Pool(ray, ray.remote(FoldWorker), actor, arguments, n)]
                    logger.info("%d proteins to fold on %d worker(s) (%g CPU, %g GPU each)",
                                counts["jobs"], n, cpus, gpus)  # fmt: skip
                    driver = Driver(ray, pools[0], state, settings, report, max_attempts, stall_timeout, started_ray)
                    try:
                        while True:
                            try:
                                driver.run(queue.units(options.max_tokens_per_batch))
                                break
                            except RayLost as lost:
                                if not started_ray or len(pools) > 1:  # not ours to restart, or restarted once
                                    once = "; it had been restarted once already" if len(pools) > 1 else ""
                                    raise PipelineError(f"{lost}{once}; {RESUME}") from lost
                                logger.warning("%s; starting a fresh local Ray and carrying on (once)", lost)
                                pools[-1].close()
                                ray.shutdown()
                                connect(ray, None, dashboard)
                                pools.append(Pool(ray, ray.remote(FoldWorker), actor, arguments, n))
                                driver.restart_with(pools[-1])
                    finally:
                        pools[-1].close()
                finally:
                    if started_ray:
                        ray.shutdown()
        except BaseException as exc:
            if report is not None and report.ok + report.failed:  # else nothing was produced: OUTDIR stays as it was
                report.stopped(exc)
            raise
        finally:
            queue.close()
        return report.finish("finished")
