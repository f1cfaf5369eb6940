"""A run's progress: a bar or log lines, rates and ETA, ``OUTDIR/run.json`` and ``OUTDIR/summary.tsv``."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from esmfold_lite.batch_folding import FoldJob
from esmfold_lite.fold.pass_progress import PassListener
from esmfold_lite.io.atomic import atomic_write_text
from esmfold_lite.io.outputs import write_summary
from esmfold_lite.io.run_state import RunState
from esmfold_lite.pipeline.errors import write_error
from esmfold_lite.pipeline.records import RUN_REPORT_NAME, SUMMARY_NAME, ProteinResult
from esmfold_lite.pipeline.settings import RunSettings

logger = logging.getLogger(__name__)

PASS_LOG_AFTER_S = 30.0
"""Without a bar, a trunk pass that ends this long or longer after its batch started is logged at INFO (else DEBUG):
long folds on a CPU show signs of life, fast ones do not fill the log."""


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

    def trunk_passes(self, batch: Sequence[FoldJob]) -> PassListener:
        """A listener for ``fold.pass_progress.on_trunk_pass`` while ``batch`` folds: the bar's postfix names the
        pass; without a bar, a pass ending ``PASS_LOG_AFTER_S`` or more after the batch started is logged."""
        label = batch[0].name if len(batch) == 1 else f"{len(batch)} proteins ({batch[0].name}, ...)"
        started = time.perf_counter()

        def listener(done: int, passes: int) -> None:
            elapsed = time.perf_counter() - started
            if not self.bar.disable:
                self.bar.set_postfix_str(f"{label}: trunk pass {done}/{passes}", refresh=True)
            level = logging.INFO if self.bar.disable and elapsed >= PASS_LOG_AFTER_S else logging.DEBUG
            logger.log(level, "%s: trunk pass %d/%d done, %.0f s", label, done, passes, elapsed)

        return listener

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


def show_bar(progress: bool) -> bool:
    """A progress bar only on a terminal (stderr), and only if asked for."""
    return progress and sys.stderr.isatty()
