"""How the pipeline stops: ``PipelineError``, a problem that ends the whole run, and the one for a failed write."""

from __future__ import annotations

import os

from esmfold_lite.io.atomic import is_disk_error, write_failure
from esmfold_lite.pipeline.sqlite_errors import RESUME_HINT


class PipelineError(Exception):
    """A problem that stops the whole run (unreadable FASTA, no records, unusable or busy OUTDIR, results of other
    settings in OUTDIR, a damaged run state, a full disk, model not loadable)."""


def interruption_of(exc: BaseException) -> BaseException | None:
    """The interruption (Ctrl-C, a signal turned into an exception: a BaseException that is not an Exception) that
    ``exc`` is, or that a C extension handed back wrapped in a SystemError (Ray's ``ray.wait`` does); else None."""
    while isinstance(exc, SystemError) and exc.__context__ is not None:
        exc = exc.__context__
    return None if isinstance(exc, Exception) else exc


def write_error(path: str | os.PathLike | None, exc: OSError) -> PipelineError:
    """The PipelineError of a failed write of ``path`` that stops the run, naming the file and what happened."""
    return PipelineError(write_failure(path, exc) + (f"; {RESUME_HINT}" if is_disk_error(exc) else ""))
