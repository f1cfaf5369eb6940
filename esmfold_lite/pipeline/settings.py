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

import torch

from esmfold_lite.batch_folding import Folder
from esmfold_lite.fold.precision import AUTO
from esmfold_lite.io.run_state import OutdirError, RunState, open_run_state
from esmfold_lite.lm.load import as_dtype
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.weights.fingerprint import checkpoint_fingerprint, language_model_fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What determines a run's numbers, as JSON-able ``values``, and its short ``digest``."""

    values: dict[str, object]
    digest: str


def _model_fingerprint(model: object) -> dict[str, object]:
    """A model object's identity without hashing all its weights: class, tensor names/shapes/dtypes and up to 64
    evenly spaced values of each tensor."""
    digest = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].cpu()
            digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
            digest.update(sample.float().numpy().tobytes() if sample.is_floating_point() else sample.numpy().tobytes())
    return {"object": type(model).__qualname__, "tensors": digest.hexdigest()[:32]}


def _dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """``torch.bfloat16``, ``"bf16"``, ``"bfloat16"`` -> ``"bfloat16"``; ``"auto"`` and None stay."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == AUTO):
        return None if dtype is None else AUTO
    return str(as_dtype(dtype)).removeprefix("torch.")


def run_settings(
    model: Folder | None = None,
    model_source: str | os.PathLike | None = None,
    lm: str | os.PathLike | None = None,
    num_recycles: int | None = None,
    dtype: torch.dtype | str | None = None,
    lm_dtype: torch.dtype | str | None = None,
) -> RunSettings:
    """The settings that make a run's numbers: the model (a checkpoint's fingerprint, cheap even for gigabytes, or a
    model object's), its LM, ``num_recycles``, ``dtype`` and ``lm_dtype`` as asked (``"auto"`` stays ``"auto"``)
    and the esmfold_lite version.

    Device, chunk size, LM offloading and batching change results only at the level of floating-point rounding and
    are not part of them.
    """
    from esmfold_lite import __version__  # late: the package's __init__ imports this module

    values = {
        "esmfold_lite": __version__,
        "model": _model_fingerprint(model) if model is not None else checkpoint_fingerprint(model_source),
        "lm": None if model is not None else language_model_fingerprint(model_source, lm),
        "num_recycles": num_recycles,
        "dtype": _dtype_name(dtype),
        "lm_dtype": _dtype_name(lm_dtype),
    }
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
    """``io.run_state.open_run_state`` with its errors as ``PipelineError``; ``overwrite`` (every protein is folded
    again) replaces a damaged run state."""
    try:
        with open_run_state(outdir, replace_damaged=overwrite) as state:
            yield state
    except OutdirError as exc:
        raise PipelineError(str(exc)) from exc
