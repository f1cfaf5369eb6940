"""What makes a run's numbers (``run_settings``) and the OUTDIR that holds results of one set of them
(``check_settings``, ``open_outdir``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.run_state import OutdirError, RunState, open_run_state
from esmfold_lite.version import __version__

if TYPE_CHECKING:
    from esmfold_lite.pipeline.engine import FoldingEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What determines a run's numbers, as JSON-able ``values``, and its short ``digest``."""

    values: dict[str, object]
    digest: str


def run_settings(engine: FoldingEngine) -> RunSettings:
    """The settings that make a run's numbers: the esmfold_lite version and the engine's (``FoldingEngine.settings``;
    ESMFold's: the checkpoint and LM fingerprints, ``num_recycles`` and the dtypes as asked)."""
    values = {"esmfold_lite": __version__, **engine.settings()}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    return RunSettings(values, digest)


def check_settings(state: RunState, settings: RunSettings, overwrite: bool) -> None:
    """Stop if OUTDIR holds results made with other settings, unless ``overwrite`` (then they are recomputed as
    their records come up, and rows of other records are marked ``stale``)."""
    conflict = state.settings_conflict(settings.digest, settings.values)
    if conflict is not None and not overwrite:
        raise PipelineError(
            f"output directory {state.outdir}: {conflict}. Use the overwrite option (--overwrite) to recompute them "
            "with the new settings, or write to another output directory"
        )
    if conflict is not None:
        logger.warning("%s; overwrite: recomputing with the new settings", conflict)
    state.use_settings(settings.digest, settings.values)


@contextlib.contextmanager
def open_outdir(outdir: str | os.PathLike, overwrite: bool = False) -> Iterator[RunState]:
    """``run_state.open_run_state`` with its errors as ``PipelineError``; ``overwrite`` (every protein is folded
    again) replaces a damaged run state."""
    try:
        with open_run_state(outdir, replace_damaged=overwrite) as state:
            yield state
    except OutdirError as exc:
        raise PipelineError(str(exc)) from exc
