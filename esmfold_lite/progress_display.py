"""How progress is shown, one rule for every command and download: a tqdm bar when someone watches (stderr is a
terminal, or a Jupyter kernel), otherwise an INFO log line every ``interval()`` seconds (a batch job's log gets
lines, not a bar's carriage returns); nothing when progress was not asked for (``-q``, ``progress=False``).

``interval()`` is ``DEFAULT_INTERVAL_S`` (30 s) unless the environment variable ``ESMFOLD_LITE_PROGRESS_INTERVAL``
gives another number of seconds (0: a line at every step; for tests and impatient logs). This module imports only
tqdm, so every layer of the package (the language models, the weights' downloads, the pipeline, the commands) can
use it.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import autonotebook, std
from tqdm.auto import tqdm

INTERVAL_ENV = "ESMFOLD_LITE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
"""Without a terminal, seconds between two progress lines (and before the first)."""

log = logging.getLogger(__name__)


def interval() -> float:
    """Seconds between progress lines: ``$ESMFOLD_LITE_PROGRESS_INTERVAL`` if it is a number >= 0, else 30."""
    try:
        seconds = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return seconds if seconds >= 0 else DEFAULT_INTERVAL_S


def show_bar(progress: bool) -> bool:
    """A bar only if progress is asked for and someone watches: stderr is a terminal, or this is a Jupyter kernel
    (where ``tqdm.auto`` draws a widget)."""
    return progress and (sys.stderr.isatty() or autonotebook.tqdm is not std.tqdm)


def duration(seconds: float) -> str:
    """A rough time for a person: ``'40 s'``, ``'3 min'``, ``'2.5 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Progress over ``total`` items (``None``: unknown): ``update(n)`` as they are done. A bar where
    ``show_bar(enabled)``, else, if ``enabled``, a line on ``logger`` every ``interval()`` seconds:
    ``'<desc>: 120 of 1,000 seq (12%), 3.2 seq/s, about 4 min left'`` (bytes with ``unit_scale``: ``'1.20 GB of
    8.40 GB'``). Use it as a context manager, or call ``close``."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        enabled: bool = True,
        logger: logging.Logger | None = None,
        unit_scale: bool = False,
        initial: int = 0,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.done = self.initial = initial
        self.bar = tqdm(
            total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, disable=not show_bar(enabled)
        )
        self.lines = enabled and self.bar.disable
        self.logger = logger or log
        self.every = interval()
        self.started = self.logged = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.done += n
        self.bar.update(n)
        if self.lines and time.monotonic() - self.logged >= self.every:
            self.logged = time.monotonic()
            self.logger.info("%s", self.line())

    def set_postfix(self, text: str) -> None:
        """Text after the bar and at the end of the lines (e.g. a second rate)."""
        self.postfix = text
        self.bar.set_postfix_str(text, refresh=False)

    def line(self) -> str:
        """The progress line: done (of total), rate and time left, as far as they are known."""
        rate = (self.done - self.initial) / max(time.monotonic() - self.started, 1e-9)
        if self.unit_scale:  # bytes
            amount, speed = f"{self.done / 1e9:.2f} G{self.unit}", f"{rate / 1e6:.1f} M{self.unit}/s"
            of = f" of {self.total / 1e9:.2f} G{self.unit}" if self.total else ""
        else:
            amount, speed = f"{self.done:,}", f"{rate:.2f} {self.unit}/s"
            of = f" of {self.total:,}" if self.total else ""
        text = f"{self.desc}: {amount}{of}" + ("" if self.unit_scale else f" {self.unit}")
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {speed}"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {duration((self.total - self.done) / rate)} left"
        return f"{text}; {self.postfix}" if self.postfix else text

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
