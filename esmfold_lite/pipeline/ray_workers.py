"""The workers of ``fold_proteome`` (``proteome.py``): the Ray side of a run, all but the driver's dispatch loop.

- ``FoldWorker``: the Ray actor holding the engine (``FoldingEngine``: the model), loaded once; it folds units with
  ``predict``'s ``BatchFolder`` (a unit that runs out of GPU memory is split, chunk sizes lowered, ...) and returns
  each protein's files rendered in memory, so the workers need no shared file system and never write.
- ``Pool`` of ``Worker`` records: the actors started, replaced when one dies, killed at the end; ``default_workers``
  sizes it from the cluster's resources.
- ``connect``: joins or starts Ray; a Ray started here listens on 127.0.0.1 only (``LOCAL_ONLY_ENV``, set before
  Ray is imported) and runs no dashboard unless asked. ``local_ray_lost`` says when that Ray's raylet or GCS server
  has exited (the driver then starts a fresh one, once).

The driver (``proteome.py``) hands the pool's workers units and writes what comes back. Ray is never imported at
module level: ``fold_proteome`` imports it (from the ``[cluster]`` extra) and passes it in, and ``FoldWorker.info``
imports it on the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass, field

import torch

from esmfold_lite.pipeline.batching import BatchFolder, FoldJob
from esmfold_lite.pipeline.engine import FoldingEngine
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.folded import FoldedProtein, render_outcome
from esmfold_lite.pipeline.options import FoldingOptions

logger = logging.getLogger(__name__)

LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's own switch for a single-machine Ray: its node address, and so every server it starts, is 127.0.0.1."""


class FoldWorker:
    """A Ray actor holding ``engine``: loads it once (on the GPU with ``use_gpu``, ``threads`` torch threads) and folds
    units with ``BatchFolder`` as ``options`` say, returning each protein's files rendered (``FoldedProtein``). A
    model that cannot load is reported by ``info`` rather than raised."""

    def __init__(self, engine: FoldingEngine, options: FoldingOptions, use_gpu: bool, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.formats = options.formats
        self.device = "cuda" if use_gpu else "cpu"
        self.error = ""
        try:
            engine.load(self.device)
            self.folding = BatchFolder(engine, options.chunk_size, options.max_tokens_per_batch, options.cpu_fallback)
        except PipelineError as exc:
            self.error = str(exc)

    def info(self) -> dict[str, object]:
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "device": self.device, "error": self.error}

    def fold(self, jobs: list[FoldJob]) -> list[FoldedProtein]:
        return [render_outcome(outcome, self.formats) for outcome in self.folding.fold(jobs)]


@dataclass
class Worker:
    handle: object  # the Ray actor handle
    number: int
    starting: object = None  # the pending ``info`` call while the model loads
    info: dict[str, object] = field(default_factory=dict)
    load: int = 0  # units handed out and not yet returned
    units: int = 0
    proteins: int = 0


class Pool:
    """The model-holding actors: started, replaced when one dies, killed at the end."""

    def __init__(self, ray, actor_class, options: dict[str, object], arguments: tuple, size: int) -> None:
        self.ray, self.actor_class, self.options, self.arguments = ray, actor_class, options, arguments
        self.workers: list[Worker] = []
        self.started = self.deaths = 0
        self.ever_ready = False
        for _ in range(size):
            self.start()

    def start(self) -> None:
        handle = self.actor_class.options(**self.options).remote(*self.arguments)
        self.started += 1
        self.workers.append(Worker(handle, self.started, starting=handle.info.remote()))

    def ready(self) -> list[Worker]:
        return [w for w in self.workers if w.starting is None]

    def remove(self, worker: Worker) -> None:
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


def describe_error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def default_workers(ray, workers: int | None, gpus: float | None, cpus: float | None) -> tuple[int, float, float]:
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


def connect(ray, address: str | None, dashboard: bool = False) -> bool:
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
        raise PipelineError(f"cannot start or join Ray (address {address or 'local'}): {describe_error(exc)}") from exc
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    if address is None and dashboard and getattr(context, "dashboard_url", None):
        logger.info("Ray dashboard: http://%s (reachable from this machine only)", context.dashboard_url)
    return True


def local_ray_lost(ray) -> str | None:
    """Why the Ray that ``connect`` started in this process is lost: its raylet or GCS server has exited (the node
    cannot run anything then, though its workers may still be finishing a call). None while both run, and always for
    a Ray this process joined (``ray.init`` started no process here). Read from Ray's own handles on the processes
    it started, so a dead node is told apart from workers that died on a live one."""
    node = ray._private.worker._global_node
    constants = ray._private.ray_constants
    vital = {constants.PROCESS_TYPE_RAYLET: "raylet", constants.PROCESS_TYPE_GCS_SERVER: "GCS server"}
    for kind, process in node.dead_processes() if node is not None else ():
        if kind in vital:
            code = process.returncode
            killer = next((sig.name for sig in signal.Signals if sig == -code), f"signal {-code}")
            how = f"was killed by {killer}" if code < 0 else f"exited with status {code}"
            return f"the local Ray is lost: its {vital[kind]} (pid {process.pid}) {how}"
    return None
