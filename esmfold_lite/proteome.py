"""``fold_proteome``: the ``predict`` pipeline driven over Ray workers, from a laptop to a cluster, losing nothing.

The steps are ``pipeline.py``'s, only the driver differs (``predict_fasta`` folds in its own process):

1. Plan, streaming: every record is validated, named and checked for completeness by ``plan_record``, as in
   ``predict``. Records to fold go to a work queue on disk (``OUTDIR/.esmfold-lite/queue.sqlite``, with the names
   given out), so a FASTA of 20 million records is never held in memory.
2. Units: the queue is read longest first and cut into token-budget units (count × longest ≤
   ``max_tokens_per_batch``, linkers included); neighbours in a length-sorted queue have similar lengths, so a
   unit is a length bucket and padding stays small. Longest first puts the proteins most likely to run out of
   memory at the start and leaves short units to balance the end.
3. Workers: one Ray actor per worker holds the model, loaded once, and folds units with ``predict``'s
   ``BatchFolder`` (a unit that runs out of GPU memory is split, chunk sizes lowered, ...). It returns each
   protein's files rendered in memory, so the workers need no shared file system.
4. The driver alone writes: each protein's files, then its completion record (``save_folded``), as ``predict``.
   A unit whose worker died (killed, OOM-killed, its node lost) is split in halves and retried on the workers
   left, and the dead worker is replaced; a protein whose worker died ``max_attempts`` times is marked failed with
   the reason. Results come only from a call that returned, so nothing is written twice.
5. The run state is the manifest of what is done, failed and pending: a driver killed and restarted plans again
   and folds only what is not complete; ``summary.tsv`` lists pending proteins until they are done.

Progress: a bar on a terminal, otherwise a log line per protein and every minute one with rates and ETA;
``OUTDIR/run.json`` every few seconds (rates, ETA, failures, workers), ``summary.tsv`` every minute and at the end.
Ray is imported only here, from the ``[cluster]`` extra.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from esmfold_lite.batch_folding import BatchFolder, FoldJob
from esmfold_lite.io.fasta import read_fasta
from esmfold_lite.io.run_state import STATE_DIR, RunState
from esmfold_lite.io.work_queue import WorkQueue
from esmfold_lite.pipeline import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_TOKENS_PER_BATCH,
    FORMATS,
    FoldedProtein,
    PipelineError,
    RunProgress,
    RunSettings,
    check_settings,
    load_folder,
    open_outdir,
    output_names,
    pending_row,
    plan_record,
    render_outcome,
    run_settings,
    save_folded,
    show_bar,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
PLAN_FLUSH = 10_000  # records planned per transaction
RESUME = "the finished proteins are kept: run the same command again to resume"
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's own switch for a single-machine Ray: its node address, and so every server it starts, is 127.0.0.1."""
DEFAULT_STALL_TIMEOUT_S = 300.0
REPORT_EVERY_S = 5.0  # run.json
LOG_EVERY_S = 60.0  # progress line (without a terminal) and summary.tsv
UNITS_PER_WORKER = 2  # handed to a worker at a time: one folding, the next one waiting


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


# --- workers -----------------------------------------------------------------------------------------------------


class FoldWorker:
    """A Ray actor holding the model: loads it once and folds units with ``BatchFolder``, returning each protein's
    files rendered (``FoldedProtein``). A model that cannot load is reported by ``info`` rather than raised."""

    def __init__(
        self,
        model_source: str,
        lm: str | None,
        use_gpu: bool,
        dtype: torch.dtype | str | None,
        lm_dtype: torch.dtype | str | None,
        cpu_offload: bool,
        num_recycles: int | None,
        chunk_size: int | str | None,
        max_tokens: int,
        cpu_fallback: bool,
        formats: Sequence[str],
        threads: int,
    ) -> None:
        torch.set_num_threads(max(1, threads))
        self.formats = tuple(formats)
        self.device = "cuda" if use_gpu else "cpu"
        self.error = ""
        try:
            model = load_folder(model_source, lm, self.device, dtype, lm_dtype, cpu_offload)
            self.folding = BatchFolder(model, num_recycles, chunk_size, max_tokens, cpu_fallback)
        except PipelineError as exc:
            self.error = str(exc)

    def info(self) -> dict[str, object]:
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "device": self.device, "error": self.error}

    def fold(self, jobs: list[FoldJob]) -> list[FoldedProtein]:
        return [render_outcome(outcome, self.formats) for outcome in self.folding.fold(jobs)]


@dataclass
class _Worker:
    handle: object  # the Ray actor handle
    number: int
    starting: object = None  # the pending ``info`` call while the model loads
    info: dict[str, object] = field(default_factory=dict)
    load: int = 0  # units handed out and not yet returned
    units: int = 0
    proteins: int = 0


@dataclass
class _Unit:
    jobs: list[FoldJob]
    attempts: int = 0  # times a worker died (or the call failed) while this unit was on it


class _Pool:
    """The model-holding actors: started, replaced when one dies, killed at the end."""

    def __init__(self, ray, actor_class, options: dict[str, object], arguments: tuple, size: int) -> None:
        self.ray, self.actor_class, self.options, self.arguments = ray, actor_class, options, arguments
        self.workers: list[_Worker] = []
        self.started = self.deaths = 0
        self.ever_ready = False
        for _ in range(size):
            self.start()

    def start(self) -> None:
        handle = self.actor_class.options(**self.options).remote(*self.arguments)
        self.started += 1
        self.workers.append(_Worker(handle, self.started, starting=handle.info.remote()))

    def ready(self) -> list[_Worker]:
        return [w for w in self.workers if w.starting is None]

    def remove(self, worker: _Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
            with contextlib.suppress(Exception):
                self.ray.kill(worker.handle, no_restart=True)

    def describe(self) -> list[dict[str, object]]:
        return [
            {"worker": w.number, **{k: v for k, v in w.info.items() if k != "error"},
             "state": "loading the model" if w.starting is not None else "ready", "units": w.units,
             "proteins": w.proteins}
            for w in self.workers
        ]  # fmt: skip

    def close(self) -> None:
        for worker in list(self.workers):
            self.remove(worker)


def _describe_error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _default_workers(ray, workers: int | None, gpus: float | None, cpus: float | None) -> tuple[int, float, float]:
    """Workers, GPUs and CPUs per worker. With GPUs in the cluster: one worker per GPU, 1 CPU each; without: one
    worker, or ``workers`` sharing the CPUs of the largest node."""
    resources = ray.cluster_resources()
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if workers is None:
        workers = max(1, int(resources.get("GPU", 0) // gpus)) if gpus else 1
    if cpus is None:
        node_cpus = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = 1.0 if gpus else float(max(1, int(node_cpus) // workers))
    return workers, gpus, cpus


# --- driver ------------------------------------------------------------------------------------------------------


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
        raise PipelineError(f"cannot read FASTA file {fasta}: no such file")
    settings = run_settings(model_source=model_source, lm=lm, num_recycles=num_recycles, dtype=dtype, lm_dtype=lm_dtype)
    with open_outdir(outdir, overwrite) as state:
        check_settings(state, settings, overwrite)
        queue = WorkQueue(state.outdir / STATE_DIR / "queue.sqlite")
        report = None
        try:
            counts = _plan(fasta, state, settings, queue, formats, max_length, overwrite)
            if counts["reused"]:
                logger.info("%d protein(s) already complete in %s: skipped", counts["reused"], state.outdir)
            report = RunProgress(
                state, settings, "fold-proteome", counts["total"], counts["jobs"], counts["residues"],
                counts["reused"], show_bar(progress),
            )  # fmt: skip
            report.invalid = counts["invalid"]
            if counts["jobs"]:
                started_ray = _connect(ray, ray_address, dashboard)
                try:
                    n, gpus, cpus = _default_workers(ray, workers, gpus_per_worker, cpus_per_worker)
                    arguments = (str(model_source), None if lm is None else str(lm), gpus > 0, dtype, lm_dtype,
                                 cpu_offload, num_recycles, chunk_size, max_tokens_per_batch, cpu_fallback,
                                 tuple(formats), max(1, int(cpus)))  # fmt: skip
                    options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0, "max_concurrency": 1}
                    pools = [_Pool(ray, ray.remote(FoldWorker), options, arguments, n)]
                    logger.info("%d proteins to fold on %d worker(s) (%g CPU, %g GPU each)",
                                counts["jobs"], n, cpus, gpus)  # fmt: skip
                    driver = _Driver(ray, pools[0], state, settings, report, max_attempts, stall_timeout)
                    try:
                        while True:
                            try:
                                driver.run(queue.units(max_tokens_per_batch))
                                break
                            except _RayLost as lost:
                                if not started_ray or len(pools) > 1:  # not ours to restart, or restarted once
                                    raise PipelineError(f"{lost}; {RESUME}") from lost
                                logger.warning("%s: starting a fresh local Ray and carrying on", lost)
                                pools[-1].close()
                                ray.shutdown()
                                _connect(ray, None, dashboard)
                                pools.append(_Pool(ray, ray.remote(FoldWorker), options, arguments, n))
                                driver.restart_with(pools[-1])
                    finally:
                        pools[-1].close()
                finally:
                    if started_ray:
                        ray.shutdown()
        except BaseException as exc:
            if report is not None and report.ok + report.failed:  # else nothing was produced: OUTDIR stays as it was
                with contextlib.suppress(Exception):  # the first error is the one to report
                    report.finish("failed" if isinstance(exc, Exception) else "interrupted")
            raise
        finally:
            queue.close()
        return report.finish("finished")


def _connect(ray, address: str | None, dashboard: bool = False) -> bool:
    """Join or start Ray; True if this call started it (and must shut it down). A Ray started here listens on
    127.0.0.1 only and runs no dashboard unless ``dashboard``."""
    if ray.is_initialized():
        return False
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it by sys.exit; the caller's one unwinds cleanly
    options: dict[str, object] = {}
    if address is None:
        options["include_dashboard"] = dashboard
        if ray._private.ray_constants.ENABLE_RAY_CLUSTER:  # Ray was imported before LOCAL_ONLY_ENV was set
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        context = ray.init(address=address, logging_level=logging.WARNING, **options)
    except Exception as exc:  # ConnectionError and Ray's own errors: one line naming the address
        raise PipelineError(f"cannot start or join Ray (address {address or 'local'}): {_describe_error(exc)}") from exc
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    if address is None and dashboard and getattr(context, "dashboard_url", None):
        logger.info("Ray dashboard: http://%s (reachable from this machine only)", context.dashboard_url)
    return True


class _RayLost(Exception):
    """Ray itself is gone: no node alive, or it does not answer."""


class _Driver:
    """The dispatch loop: hand units to workers, write what comes back, retry what a dead worker held, and watch
    the cluster: a lost node is logged, and when after a loss no worker makes progress for ``stall_timeout`` seconds
    (nothing can host one) the run stops; ``_RayLost`` when no node is left at all."""

    def __init__(
        self, ray, pool: _Pool, state: RunState, settings: RunSettings, report: RunProgress, attempts: int,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
    ):  # fmt: skip
        self.ray, self.pool, self.state, self.settings, self.report = ray, pool, state, settings, report
        self.max_attempts, self.stall_timeout = attempts, stall_timeout
        self.retry: collections.deque[_Unit] = collections.deque()
        self.in_flight: dict[object, tuple[_Unit, _Worker]] = {}
        self.fresh: Iterator[_Unit] | None = None
        self.drained = False  # every unit of the queue was handed out once
        self.deaths_in_a_row = 0
        self.progress_at = time.monotonic()  # a unit came back or a worker got ready
        self.nodes: dict[str, str] = {}  # node id -> address, every node seen alive
        self.lost: dict[str, str] = {}

    def restart_with(self, pool: _Pool) -> None:
        """Carry on with ``pool`` on a fresh Ray: the units the old one held are handed out again (no attempt
        counted: their proteins did nothing wrong)."""
        self.retry.extendleft(unit for unit, _ in self.in_flight.values())
        self.in_flight.clear()
        self.pool, self.nodes, self.lost = pool, {}, {}
        self.progress_at = time.monotonic()

    def run(self, units: Iterator[list[FoldJob]]) -> None:
        """Until every unit is done; ``units`` is read once, also across ``restart_with``."""
        if self.fresh is None:
            self.fresh = (_Unit(jobs) for jobs in units)
        fresh = self.fresh
        self._watch(time.monotonic())
        last_report = last_log = time.monotonic()
        while True:
            self._hand_out(fresh)
            if self.drained and not self.in_flight and not self.retry:
                break
            starting = {w.starting: w for w in self.pool.workers if w.starting is not None}
            waiting = [*self.in_flight, *starting]
            if not waiting:
                raise PipelineError("every worker died or failed to start; see the errors above")
            done, _ = self.ray.wait(waiting, num_returns=1, timeout=REPORT_EVERY_S)
            if done:
                self.progress_at = time.monotonic()
            for ref in done:
                if ref in starting:
                    self._started(starting[ref], ref)
                else:
                    self._returned(ref, *self.in_flight.pop(ref))
            now = time.monotonic()
            if now - last_report >= REPORT_EVERY_S:
                self._watch(now)
                self.report.extra = {"workers": self.pool.describe(), "worker_deaths": self.pool.deaths}
                self.report.write_report()
                last_report = now
            if now - last_log >= LOG_EVERY_S:
                self.report.write_summary()
                if self.report.bar.disable:
                    self._log_progress()
                last_log = now
        self.report.extra = {"workers": self.pool.describe(), "worker_deaths": self.pool.deaths}

    def _watch(self, now: float) -> None:
        """Log lost nodes; stop when after a loss no worker has made progress for ``stall_timeout`` seconds."""
        try:
            alive = {n["NodeID"]: str(n.get("NodeManagerAddress")) for n in self.ray.nodes() if n.get("Alive")}
        except Exception as exc:  # the GCS is gone
            raise _RayLost(f"Ray does not answer ({_describe_error(exc)})") from exc
        for node, address in self.nodes.items():
            if node not in alive and node not in self.lost:
                self.lost[node] = address
                logger.warning("Ray node %s at %s was lost; its units go to the workers left", node[:12], address)
        self.nodes.update(alive)
        if not alive:
            raise _RayLost(f"Ray lost its last node ({', '.join(self._lost_nodes())})")
        working = any(w.starting is None and w.load for w in self.pool.workers)
        if self.lost and not working and now - self.progress_at > self.stall_timeout:
            raise PipelineError(
                f"no worker could be scheduled for {self.stall_timeout:.0f} s after Ray lost node(s) "
                f"{', '.join(self._lost_nodes())}; {RESUME} once the cluster has room again (or raise --stall-timeout)"
            )

    def _lost_nodes(self) -> list[str]:
        return [f"{node[:12]} at {address}" for node, address in self.lost.items()]

    def _hand_out(self, fresh: Iterator[_Unit]) -> None:
        for worker in self.pool.ready():
            while worker.load < UNITS_PER_WORKER:
                unit = self.retry.popleft() if self.retry else next(fresh, None)
                if unit is None:
                    self.drained = True
                    return
                self.in_flight[worker.handle.fold.remote(unit.jobs)] = (unit, worker)
                worker.load += 1

    def _started(self, worker: _Worker, ref: object) -> None:
        worker.starting = None
        try:
            worker.info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            worker.info = {"error": _describe_error(exc)}
        if not worker.info.get("error"):
            if not self.pool.ever_ready:  # rates count from the first worker with its model loaded
                self.pool.ever_ready = True
                self.report.start_folding()
            logger.info("worker %d ready: pid %s on %s (%s)", worker.number, worker.info["pid"],
                        worker.info["node"], worker.info["device"])  # fmt: skip
            return
        self.pool.remove(worker)
        if not self.pool.ever_ready:  # the first worker cannot load the model: nothing will
            raise PipelineError(f"worker {worker.number}: {worker.info['error']}")
        logger.error("worker %d could not start: %s", worker.number, worker.info["error"])

    def _returned(self, ref: object, unit: _Unit, worker: _Worker) -> None:
        worker.load -= 1
        try:
            folded = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._failed(unit, worker, exc)
            return
        self.deaths_in_a_row = 0
        worker.units += 1
        worker.proteins += len(folded)
        self.report.add(save_folded(self.state, self.settings, folded))

    def _failed(self, unit: _Unit, worker: _Worker, exc: BaseException) -> None:
        """A unit's call failed: its worker died (replace it) or the call raised; retry the unit in halves."""
        message = _describe_error(exc)
        dead = not isinstance(exc, self.ray.exceptions.RayTaskError) or isinstance(
            exc, self.ray.exceptions.RayActorError
        )
        if dead and worker in self.pool.workers:
            self.pool.deaths += 1
            self.deaths_in_a_row += 1
            logger.warning("worker %d (pid %s) died: %s; starting another", worker.number,
                           worker.info.get("pid"), message)  # fmt: skip
            self.pool.remove(worker)
            if self.deaths_in_a_row > 2 * len(self.pool.workers) + self.max_attempts + 2:
                raise PipelineError(f"workers keep dying without finishing anything; last: {message}")
            self.pool.start()
        unit.attempts += 1
        if len(unit.jobs) > 1 or unit.attempts < self.max_attempts:
            what = "worker lost" if dead else "call failed"
            for job in unit.jobs:
                job.notes.append(f"{what} in a unit of {len(unit.jobs)}: retried")
            half = (len(unit.jobs) + 1) // 2
            self.retry.extend(_Unit(part, unit.attempts) for part in (unit.jobs[:half], unit.jobs[half:]) if part)
        else:
            job = unit.jobs[0]
            error = f"failed {unit.attempts} times on a worker (it died or the call failed); last: {message}"
            self.report.add(save_folded(self.state, self.settings, [FoldedProtein(job, error=error)]))

    def _log_progress(self) -> None:
        s = self.report.stats()
        p = s["proteins"]
        eta = "unknown" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"]))
        logger.info("progress: %d of %d proteins folded (%d failed so far), %.2f proteins/s, %.0f residues/s, ETA %s",
                    p["folded"], p["folded"] + p["pending"], self.report.failed, s["proteins_per_s"],
                    s["residues_per_s"], eta)  # fmt: skip
