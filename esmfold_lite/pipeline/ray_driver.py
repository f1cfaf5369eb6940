"""fold-proteome's dispatch loop (``Driver``): units of jobs handed to the Ray workers (``ray_workers``), each
result written by the driver alone (``save_folded``, as ``predict``), a unit whose worker died split in halves and
retried, and the cluster watched: a lost node is logged, a run that cannot progress stops, and ``RayLost`` tells
``fold_proteome`` that Ray itself is gone (a Ray it started is started again once)."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.folded import FoldedProtein, save_folded
from esmfold_lite.pipeline.names import DEFAULT_STALL_TIMEOUT_S
from esmfold_lite.pipeline.progress import RunProgress
from esmfold_lite.pipeline.ray_workers import Pool, Worker, describe_error, local_ray_lost
from esmfold_lite.pipeline.run_state import RunState
from esmfold_lite.pipeline.settings import RunSettings

logger = logging.getLogger(__name__)

RESUME = "the finished proteins are kept: run the same command again to resume"
REPORT_EVERY_S = 5.0  # run.json
LOG_EVERY_S = 60.0  # progress line (without a terminal) and summary.tsv
UNITS_PER_WORKER = 2  # handed to a worker at a time: one folding, the next one waiting


class RayLost(Exception):
    """Ray itself is gone: no node alive, it does not answer, or the local Ray started here lost its raylet or GCS."""


@dataclass
class Unit:
    jobs: list[FoldJob]
    attempts: int = 0  # times a worker died (or the call failed) while this unit was on it


class Driver:
    """The dispatch loop: hand units to workers, write what comes back, retry what a dead worker held, and watch
    the cluster: a lost node is logged, and when after a loss no worker makes progress for ``stall_timeout`` seconds
    (nothing can host one) the run stops; ``RayLost`` when no node is left at all, or, with ``local`` (the Ray is one
    this process started), as soon as its raylet or GCS server is seen dead (``local_ray_lost``): every few seconds
    and whenever a worker dies or cannot start, before that death is counted against the unit or the pool."""

    def __init__(
        self, ray, pool: Pool, state: RunState, settings: RunSettings, report: RunProgress, attempts: int,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT_S, local: bool = False,
    ):  # fmt: skip
        self.ray, self.pool, self.state, self.settings, self.report = ray, pool, state, settings, report
        self.max_attempts, self.stall_timeout, self.local = attempts, stall_timeout, local
        self.retry: collections.deque[Unit] = collections.deque()
        self.in_flight: dict[object, tuple[Unit, Worker]] = {}
        self.fresh: Iterator[Unit] | None = None
        self.drained = False  # every unit of the queue was handed out once
        self.deaths_in_a_row = 0
        self.progress_at = time.monotonic()  # a unit came back or a worker got ready
        self.nodes: dict[str, str] = {}  # node id -> address, every node seen alive
        self.lost: dict[str, str] = {}

    def restart_with(self, pool: Pool) -> None:
        """Carry on with ``pool`` on a fresh Ray: the units the old one held are handed out again (no attempt
        counted: their proteins did nothing wrong)."""
        self.retry.extendleft(unit for unit, _ in self.in_flight.values())
        self.in_flight.clear()
        self.pool, self.nodes, self.lost = pool, {}, {}
        self.deaths_in_a_row = 0
        self.progress_at = time.monotonic()

    def run(self, units: Iterator[list[FoldJob]]) -> None:
        """Until every unit is done; ``units`` is read once, also across ``restart_with``."""
        if self.fresh is None:
            self.fresh = (Unit(jobs) for jobs in units)
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
                self._check_local_ray()
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

    def _check_local_ray(self, held: Unit | None = None) -> None:
        """RayLost if the local Ray this process started lost its raylet or GCS server; ``held`` (the unit of the
        worker whose death showed it) is handed out again on the fresh Ray, no attempt counted: not the unit's fault."""
        why = local_ray_lost(self.ray) if self.local else None
        if why:
            if held is not None:
                self.retry.appendleft(held)
            raise RayLost(why)

    def _watch(self, now: float) -> None:
        """Log lost nodes; stop when after a loss no worker has made progress for ``stall_timeout`` seconds."""
        self._check_local_ray()
        try:
            alive = {n["NodeID"]: str(n.get("NodeManagerAddress")) for n in self.ray.nodes() if n.get("Alive")}
        except Exception as exc:  # the GCS is gone
            raise RayLost(f"Ray does not answer ({describe_error(exc)})") from exc
        for node, address in self.nodes.items():
            if node not in alive and node not in self.lost:
                self.lost[node] = address
                logger.warning("Ray node %s at %s was lost; its units go to the workers left", node[:12], address)
        self.nodes.update(alive)
        if not alive:
            raise RayLost(f"Ray lost its last node ({', '.join(self._lost_nodes())})")
        working = any(w.starting is None and w.load for w in self.pool.workers)
        if self.lost and not working and now - self.progress_at > self.stall_timeout:
            raise PipelineError(
                f"no worker could be scheduled for {self.stall_timeout:.0f} s after Ray lost node(s) "
                f"{', '.join(self._lost_nodes())}; {RESUME} once the cluster has room again (or raise --stall-timeout)"
            )

    def _lost_nodes(self) -> list[str]:
        return [f"{node[:12]} at {address}" for node, address in self.lost.items()]

    def _hand_out(self, fresh: Iterator[Unit]) -> None:
        for worker in self.pool.ready():
            while worker.load < UNITS_PER_WORKER:
                unit = self.retry.popleft() if self.retry else next(fresh, None)
                if unit is None:
                    self.drained = True
                    return
                self.in_flight[worker.handle.fold.remote(unit.jobs)] = (unit, worker)
                worker.load += 1

    def _started(self, worker: Worker, ref: object) -> None:
        worker.starting = None
        try:
            worker.info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            worker.info = {"error": describe_error(exc)}
            self._check_local_ray()
        if not worker.info.get("error"):
            if not self.pool.ever_ready:  # rates count from the first worker with its model loaded
                self.pool.ever_ready = True
                self.report.start_folding()
                self.report.write_summary()  # every protein listed (pending until folded), as predict does
            logger.info("worker %d ready: pid %s on %s (%s)", worker.number, worker.info["pid"],
                        worker.info["node"], worker.info["device"])  # fmt: skip
            return
        self.pool.remove(worker)
        if not self.pool.ever_ready:  # the first worker cannot load the model: nothing will
            raise PipelineError(f"worker {worker.number}: {worker.info['error']}")
        logger.error("worker %d could not start: %s", worker.number, worker.info["error"])

    def _returned(self, ref: object, unit: Unit, worker: Worker) -> None:
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

    def _failed(self, unit: Unit, worker: Worker, exc: BaseException) -> None:
        """A unit's call failed: its worker died (replace it) or the call raised; retry the unit in halves."""
        message = describe_error(exc)
        dead = not isinstance(exc, self.ray.exceptions.RayTaskError) or isinstance(
            exc, self.ray.exceptions.RayActorError
        )
        if dead:
            self._check_local_ray(unit)
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
            self.retry.extend(Unit(part, unit.attempts) for part in (unit.jobs[:half], unit.jobs[half:]) if part)
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
