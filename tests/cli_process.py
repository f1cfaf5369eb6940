"""The real ``esmfold-lite`` command line in a subprocess whose stderr is a file, as in a batch job's log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from esmfold_lite.progress_display import INTERVAL_ENV


def run_logged(argv: list[str], log: Path, interval: float | None = None) -> str:
    """Run ``esmfold-lite ARGV`` with stderr written to ``log`` (``interval``: seconds between progress lines, via
    ``$ESMFOLD_LITE_PROGRESS_INTERVAL``); assert it exits 0; return what it wrote to stderr."""
    env = {key: value for key, value in os.environ.items() if key != INTERVAL_ENV}
    if interval is not None:
        env[INTERVAL_ENV] = str(interval)
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "esmfold_lite.cli", *argv], stderr=stderr, env=env, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    return text


def assert_no_bar(text: str) -> None:
    """No progress bar drawn: no carriage return, no bar blocks, no tqdm ``NN%|`` gauge."""
    assert "\r" not in text and "█" not in text and not re.search(r"\d+%\|", text), text
