"""How the pipeline stops: ``PipelineError``, a problem that ends the whole run, and the one for a failed write."""

from __future__ import annotations

import os

from esmfold_lite.io.atomic import is_disk_error, write_failure
from esmfold_lite.io.sqlite_errors import RESUME_HINT


class PipelineError(Exception):
    """A problem that stops the whole run (unreadable FASTA, no records, unusable or busy OUTDIR, results of other
    settings in OUTDIR, a damaged run state, a full disk, model not loadable)."""


def write_error(path: str | os.PathLike | None, exc: OSError) -> PipelineError:
    """The PipelineError of a failed write of ``path`` that stops the run, naming the file and what happened."""
    return PipelineError(write_failure(path, exc) + (f"; {RESUME_HINT}" if is_disk_error(exc) else ""))
