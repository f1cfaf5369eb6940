"""A run's progress: a bar or log lines, rates and ETA, ``OUTDIR/run.json`` and ``OUTDIR/summary.tsv``."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from esmfold_lite.fold_progress import LM_LAYER, FoldStep, StepListener
from esmfold_lite.io.atomic import atomic_write_text
from esmfold_lite.io.summary_tsv import write_summary
from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.errors import interruption_of, write_error
from esmfold_lite.pipeline.records import RUN_REPORT_NAME, SUMMARY_NAME, ProteinResult
from esmfold_lite.pipeline.run_state import RunState
from esmfold_lite.pipeline.settings import RunSettings
from esmfold_lite.progress_display import duration, interval, show_bar

__all__ = ["FoldSteps", "RunProgress", "fold_work", "show_bar"]  # show_bar: the drivers take the rule from here

logger = logging.getLogger(__name__)

BAR_REFRESH_S = 1.0
"""On a terminal, the bar's postfix naming the step of the fold in progress is redrawn at most this often."""

FAR_BEYOND = 4.0
"""A batch whose work (``fold_work``) or planned trunk memory is this many times the largest batch's so far is
announced before it starts, with what it will need."""

PAIR_CHANNELS = 128
"""c_z of ESMFold's trunk, for ``fold_work``."""


def fold_work(length: int, batch: int = 1) -> float:
    """A rough measure of the arithmetic of folding ``batch`` sequences padded to ``length`` positions, to scale a
    measured time from one batch to another: ``batch · L² · (L + 5·c_z)``. One trunk block does about 6·c_z
    multiply-adds per residue triple (the triangle multiplications and attentions) and 31·c_z² per pair (their
    projections and the pair transition); the language model and the structure module are left out."""
    return batch * length**2 * (length + 5 * PAIR_CHANNELS)


@dataclass
class _Batch:
    """A batch about to fold or folded: its label, size, work, planned trunk memory and measured seconds."""

    label: str
    length: int
    size: int
    peak_bytes: int | None
    seconds: float = 0.0

    @property
    def work(self) -> float:
        return fold_work(self.length, self.size)


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
        self.folding: _Batch | None = None  # the batch folding now (``fold_steps``)
        self.largest: _Batch | None = None  # the folded batch of most work so far

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
        batch, self.folding = self.folding, None
        if batch is not None and any(r.status == "ok" for r in results):
            batch.seconds = sum(r.seconds or 0.0 for r in results)
            if self.largest is None or batch.work >= self.largest.work:
                self.largest = batch

    def fold_steps(self, batch: Sequence[FoldJob], peak_bytes: int | None = None) -> StepListener:
        """Before ``batch`` folds (``peak_bytes``: the chunk planner's estimate of its trunk memory, if known):
        announce it when it is far beyond the batches so far (``FAR_BEYOND``), and return the listener to install
        with ``fold_progress.on_fold_step`` while it folds (``FoldSteps``)."""
        label = batch[0].name if len(batch) == 1 else f"{len(batch)} proteins ({batch[0].name}, ...)"
        self.folding = _Batch(label, max(job.tokens for job in batch), len(batch), peak_bytes)
        self._announce(self.folding)
        return FoldSteps(label, None if self.bar.disable else self.bar)

    def _announce(self, batch: _Batch) -> None:
        """Log what ``batch`` will need when it is far beyond the largest folded so far: its planned trunk memory
        and the time of the largest scaled by their work (``fold_work``)."""
        ref = self.largest
        if ref is None or ref.seconds <= 0:
            return
        ratio = batch.work / ref.work
        memory = batch.peak_bytes / ref.peak_bytes if batch.peak_bytes and ref.peak_bytes else 0.0
        if ratio < FAR_BEYOND and memory < FAR_BEYOND:
            return
        size = f"{batch.size} x " if batch.size > 1 else ""
        peak = ""
        if batch.peak_bytes:
            gib = batch.peak_bytes / 2**30
            peak = f"planned peak {gib:.1f} GiB" if gib >= 1 else f"planned peak {gib * 1024:.1f} MiB"
            peak += " of trunk memory"
            peak += f" ({memory:.0f}x the largest so far), " if memory else ", "
        logger.info(
            "%s (%s%s positions): %sabout %.0fx the work of the largest batch so far (%s, %s); expect about %s on this "
            "machine",
            batch.label, size, f"{batch.length:,}", peak, ratio, ref.label, duration(ref.seconds),
            duration(ratio * ref.seconds),
        )  # fmt: skip

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

    def stopped(self, exc: BaseException) -> None:
        """``finish`` a run that ``exc`` stopped: ``interrupted`` (Ctrl-C, a signal) or ``failed``. An error on the
        way is dropped: ``exc`` is the one to report."""
        with contextlib.suppress(Exception):
            self.finish("interrupted" if interruption_of(exc) else "failed")


class FoldSteps:
    """The listener of one batch's fold steps (``fold_progress``): on a terminal the bar's postfix names the
    step, at most every ``BAR_REFRESH_S``; without a bar an INFO line every ``progress_display.interval()``
    seconds (the first that long after the batch started, so fast folds log nothing):
    ``T1500: trunk pass 1/4, block 20/48, about 3 min left``.

    The time left is the time so far divided by the fraction of the work done. In the language model (it runs once,
    before the trunk) that is the fraction of its layers, and the estimate covers the language model only. In the
    trunk it is the fraction of all its blocks over the passes the fold runs (every block of every pass costs the
    same: one length, one chunk plan), timed from the trunk's start, so it covers the rest of the fold; the
    structure module after each pass and the heads at the end are small beside the blocks. A fold retried after
    running out of memory starts its clocks again. Timing is host-side: on a GPU it is exact once the kernel queue is
    full, which long folds reach.
    """

    def __init__(self, label: str, bar: tqdm | None) -> None:
        self.label, self.bar = label, bar
        self.every = interval()
        self.previous = self.logged = time.perf_counter()
        self.shown = float("-inf")  # the first step shows at once
        self.lm_started = self.trunk_started = self.previous

    def __call__(self, step: FoldStep) -> None:
        now = time.perf_counter()
        if step.done == 1 and step.pass_number == 1:  # a stage starts (again, after an out-of-memory retry)
            if step.stage == LM_LAYER:
                self.lm_started = self.previous
            else:
                self.trunk_started = self.previous
        self.previous = now
        if step.stage != LM_LAYER and step.done == step.total:
            logger.debug("%s: trunk pass %d/%d done, %.0f s", self.label, step.pass_number, step.passes,
                         now - self.lm_started)  # fmt: skip
        if self.bar is not None:
            if now - self.shown >= BAR_REFRESH_S:
                self.shown = now
                self.bar.set_postfix_str(f"{self.label}: {self.describe(step, now)}", refresh=True)
        elif now - self.logged >= self.every:
            self.logged = now
            logger.info("%s: %s", self.label, self.describe(step, now))

    def describe(self, step: FoldStep, now: float) -> str:
        """``'language model layer 3/36, about 40 s left in the language model'`` or
        ``'trunk pass 1/4, block 20/48, about 3 min left'``."""
        if step.stage == LM_LAYER:
            left = (now - self.lm_started) * (step.total - step.done) / step.done
            return f"{step.stage} {step.done}/{step.total}, about {duration(left)} left in the language model"
        done = (step.pass_number - 1) * step.total + step.done
        left = (now - self.trunk_started) * (step.passes * step.total - done) / done
        return (f"trunk pass {step.pass_number}/{step.passes}, block {step.done}/{step.total}, "
                f"about {duration(left)} left")  # fmt: skip
