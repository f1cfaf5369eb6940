"""ESMFold as the pipeline's ``FoldingEngine``: ``ESMFoldEngine`` folds with a model a caller gives or with the one
``FoldingOptions.model_source`` names (``load_folder``), and gives the settings that make its numbers."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

import torch

from esmfold_lite.devices import as_dtype
from esmfold_lite.fold.load import load_model
from esmfold_lite.fold.precision import AUTO
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.options import FoldingOptions
from esmfold_lite.prediction import Prediction
from esmfold_lite.weights.fingerprint import checkpoint_fingerprint, language_model_fingerprint

logger = logging.getLogger(__name__)


class Folder(Protocol):
    """A loaded ESMFold as the engine calls it (``esmfold_lite.load_model`` returns one)."""

    def fold(
        self, sequences: list[str], num_recycles: int | None = None, chunk_size: int | str | None = None
    ) -> Prediction: ...


def load_folder(
    source: str | os.PathLike, lm=None, device=None, dtype=None, lm_dtype=None, cpu_offload: bool = False
) -> Folder:
    """``esmfold_lite.load_model`` for folding (device: CUDA if available; ``cpu_offload``: the LM on the CPU), its
    errors as one-line PipelineError. The loader logs the dtypes it chose."""
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loading the model from %s onto %s", source, device)
    try:
        return load_model(
            source, lm=lm, device=device, dtype=dtype, lm_dtype=lm_dtype, lm_device="cpu" if cpu_offload else None
        )
    except Exception as exc:  # the loader's own message names the problem; keep it on one line
        logger.debug("loading the model failed", exc_info=True)
        raise PipelineError(f"cannot load the model from {source}: {exc}") from exc


@dataclass
class ESMFoldEngine:
    """ESMFold with ``options``' ``model_source``, ``lm``, ``dtype``, ``lm_dtype``, ``cpu_offload`` and
    ``num_recycles``; or ``given``, a model already loaded (a caller's: ``predict_fasta(model=...)``), which
    ``options.model_source`` then does not name. ValueError when neither is there."""

    options: FoldingOptions
    given: Folder | None = None
    model: Folder | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.given is None and self.options.model_source is None:
            raise ValueError("give a model or a model_source (--model)")
        self.model = self.given

    def settings(self) -> dict[str, object]:
        """The model (a checkpoint's fingerprint, cheap even for gigabytes, or the given model's), its LM,
        ``num_recycles``, ``dtype`` and ``lm_dtype`` as asked (``"auto"`` stays ``"auto"``).

        Device, chunk size, LM offloading and batching change results only at the level of floating-point rounding
        and are not part of them."""
        o, given = self.options, self.given
        return {
            "model": _model_fingerprint(given) if given is not None else checkpoint_fingerprint(o.model_source),
            "lm": None if given is not None else language_model_fingerprint(o.model_source, o.lm),
            "num_recycles": o.num_recycles,
            "dtype": _dtype_name(o.dtype),
            "lm_dtype": _dtype_name(o.lm_dtype),
        }

    def load(self, device: str | torch.device | None = None) -> None:
        """Load ``options.model_source`` (``load_folder``) unless a model is there."""
        if self.model is None:
            o = self.options
            self.model = load_folder(o.model_source, o.lm, device, o.dtype, o.lm_dtype, o.cpu_offload)

    def fold(self, sequences: list[str], chunk_size: int | str | None = None) -> Prediction:
        return self.model.fold(sequences, num_recycles=self.options.num_recycles, chunk_size=chunk_size)

    def planned_peak_bytes(self, length: int, batch: int, chunk_size: int | str | None) -> int | None:
        """The chunk planner's estimate of the trunk memory of a batch, for a model that has one
        (``ESMFold.planned_peak_bytes``), else None."""
        planned = getattr(self.model, "planned_peak_bytes", None)
        return None if planned is None else planned(length, batch, chunk_size)


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
