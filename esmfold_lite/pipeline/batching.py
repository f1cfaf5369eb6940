"""Folding many proteins with a ``FoldingEngine`` in batches packed by a token budget, recovering from
out-of-memory errors.

Jobs come sorted by length (shortest first), so a setting that one protein needed is kept for the rest of the run:

1. A batch that runs out of memory is split in halves, and the token budget is halved for the batches after it.
2. A single protein that still does not fit is retried with smaller trunk chunks (``CHUNK_SIZES``).
3. Then, if allowed, the engine's model moves to the CPU (fp32) and stays there.

Any other error in a batch is retried protein by protein, so one bad protein cannot fail its neighbours. What was
needed is written into each job's ``notes``; a protein that fits nowhere comes back with an ``error``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from esmfold_lite.pipeline.engine import FoldingEngine
from esmfold_lite.prediction import Prediction

logger = logging.getLogger(__name__)

CHUNK_SIZES: tuple[int, ...] = (512, 128, 32, 8)  # tried in turn, below the current one, when a protein runs OOM


@dataclass
class FoldJob:
    """One protein to fold."""

    index: int  # position in the input
    name: str
    header: str
    sequence: str  # chains separated by ":"
    length: int  # residues over all chains
    tokens: int  # positions the trunk sees: residues + linkers between chains
    notes: list[str] = field(default_factory=list)


@dataclass
class FoldOutcome:
    """A folded job (``prediction`` is its batch's, the job is row ``row``) or a failed one (``error``)."""

    job: FoldJob
    prediction: Prediction | None
    row: int = 0
    seconds: float = 0.0  # the job's share of its batch's folding time
    error: str = ""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and for RuntimeErrors that report running out of memory (e.g. MPS)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _tensors(model: object) -> list[torch.Tensor]:
    """Parameters and buffers of an ``nn.Module`` (each once); [] for other objects."""
    return [*model.parameters(), *model.buffers()] if isinstance(model, torch.nn.Module) else []


def _uses_accelerator(model: object) -> bool:
    """True when part of the model is off the CPU (so that a CPU fallback can help)."""
    return any(t.device.type != "cpu" for t in _tensors(model))


class BatchFolder:
    """Folds batches of jobs with a loaded ``engine``, adapting token budget, chunk size and device to the memory."""

    def __init__(
        self,
        engine: FoldingEngine,
        chunk_size: int | str | None = None,
        max_tokens: int = 1024,
        cpu_fallback: bool = False,
    ) -> None:
        self.engine = engine
        self.chunk_size = self.first_chunk_size = chunk_size
        self.max_tokens = max_tokens
        self.cpu_fallback = cpu_fallback
        self.placement: list[tuple[torch.Tensor, torch.device, torch.dtype]] = []  # before a CPU fallback
        self.on_cpu = False

    def next_batch(self, queue: Sequence[FoldJob], start: int) -> list[FoldJob]:
        """Jobs from ``queue[start]`` on (sorted by tokens) while ``count × longest`` fits the budget; at least one."""
        end = start + 1
        while end < len(queue) and (end + 1 - start) * queue[end].tokens <= self.max_tokens:
            end += 1
        return list(queue[start:end])

    def planned_peak_bytes(self, jobs: Sequence[FoldJob]) -> int | None:
        """The engine's estimate of the memory that folding ``jobs`` as one batch needs now, for an engine that has
        one (``FoldingEngine``), else None."""
        planned = getattr(self.engine, "planned_peak_bytes", None)
        return None if planned is None else planned(max(job.tokens for job in jobs), len(jobs), self.chunk_size)

    def fold(self, jobs: list[FoldJob]) -> list[FoldOutcome]:
        """Fold ``jobs`` as one batch, recovering from failures: one outcome per job, in no particular order."""
        outcomes: list[FoldOutcome] = []
        pending = [jobs]  # a stack of groups still to fold
        while pending:
            group = pending.pop()
            start = time.perf_counter()
            prediction, failure = self._try_fold(group)
            if failure is None:
                seconds = (time.perf_counter() - start) / len(group)
                outcomes += [self._success(job, prediction, i, seconds) for i, job in enumerate(group)]
                continue
            _release_memory()
            out_of_memory, message = failure
            if len(group) > 1:
                pending += self._split(group, out_of_memory)
            elif out_of_memory and (self._lower_chunk_size(group[0]) or self._move_to_cpu(group[0])):
                pending.append(group)
            else:
                if out_of_memory:
                    where = " on the CPU" if self.on_cpu else "" if self.cpu_fallback else " (CPU fallback not enabled)"
                    message = f"out of memory with chunk size {self.chunk_size}{where}"
                outcomes.append(FoldOutcome(group[0], None, error=message))
        return outcomes

    def _try_fold(self, group: list[FoldJob]) -> tuple[Prediction | None, tuple[bool, str] | None]:
        """``(prediction, None)`` or ``(None, (out_of_memory, message))``. Returning (not retrying inside the
        ``except``) drops the traceback, and with it the activations it holds, before anything is retried."""
        try:
            with torch.no_grad():
                sequences = [job.sequence for job in group]
                return self.engine.fold(sequences, chunk_size=self.chunk_size), None
        except Exception as exc:  # any failure is reported per protein; nothing stops the run
            logger.debug("folding %d protein(s) failed", len(group), exc_info=True)
            return None, (is_out_of_memory(exc), f"{type(exc).__name__}: {exc}")

    def _success(self, job: FoldJob, prediction: Prediction, row: int, seconds: float) -> FoldOutcome:
        if self.chunk_size != self.first_chunk_size:
            job.notes.append(f"chunk size {self.chunk_size}")
        if self.on_cpu:
            job.notes.append("folded on the CPU")
        if prediction.random_weights:
            job.notes.append("RANDOM WEIGHTS: not a prediction")
        return FoldOutcome(job, prediction, row, seconds)

    def _split(self, group: list[FoldJob], out_of_memory: bool) -> list[list[FoldJob]]:
        """Sub-batches to retry, last to fold first (they go on a stack)."""
        if not out_of_memory:
            for job in group:
                job.notes.append(f"batch of {len(group)} failed: folded alone")
            return [[job] for job in reversed(group)]
        padded = len(group) * max(job.tokens for job in group)
        if padded // 2 < self.max_tokens:
            self.max_tokens = max(1, padded // 2)
            logger.warning("out of memory on a batch of %d: token budget lowered to %d", len(group), self.max_tokens)
        for job in group:
            job.notes.append(f"out of memory in a batch of {len(group)}: split")
        half = len(group) // 2
        return [group[half:], group[:half]]

    def _lower_chunk_size(self, job: FoldJob) -> bool:
        current = self.chunk_size if isinstance(self.chunk_size, int) else None  # None or "auto": start at the top
        smaller = [c for c in CHUNK_SIZES if current is None or c < current]
        if not smaller:
            return False
        logger.warning(
            "%s (%d positions) ran out of memory: chunk size lowered to %d", job.name, job.tokens, smaller[0]
        )
        self.chunk_size = smaller[0]
        return True

    def _move_to_cpu(self, job: FoldJob) -> bool:
        if not self.cpu_fallback or self.on_cpu or not _uses_accelerator(self.engine.model):
            return False
        logger.warning("%s (%d positions) does not fit in GPU memory: folding it and longer ones on the CPU",
                       job.name, job.tokens)  # fmt: skip
        # Tensor by tensor, so that restore() brings back mixed placements (an fp16 LM beside an fp32 trunk).
        # fp32 on the CPU: half-precision kernels are missing or slow there.
        self.placement = [(t, t.device, t.dtype) for t in _tensors(self.engine.model)]
        for t, _, dtype in self.placement:
            t.data = t.data.to(device="cpu", dtype=torch.float32 if dtype.is_floating_point else dtype)
        _release_memory()
        self.on_cpu = True
        return True

    def restore(self) -> None:
        """Put every parameter and buffer back where it was before a CPU fallback."""
        for t, device, dtype in self.placement:
            t.data = t.data.to(device=device, dtype=dtype)
        self.placement, self.on_cpu = [], False
