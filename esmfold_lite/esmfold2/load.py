"""``load_esmfold2``: a transformers ``EsmFold2Model`` folder -> an ``ESMFold2`` in eval mode, built on the meta
device and given the folder's memory-mapped tensors (no random init, no second copy of the weights)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from esmfold_lite.devices import as_device
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.model import ESMFold2
from esmfold_lite.lm.esmc import ESMCConfig
from esmfold_lite.lm.load import build_from_state
from esmfold_lite.weights.cast import cast_state_
from esmfold_lite.weights.esmfold2_format import read_transformers_esmfold2
from esmfold_lite.weights.safe_pickle import CheckpointError

logger = logging.getLogger(__name__)
HALF = (torch.float16, torch.bfloat16)


def load_esmfold2(
    source: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> ESMFold2:
    """An ESMFold2 in eval mode from a transformers ``EsmFold2Model`` folder (config.json + model.safetensors,
    sharded or not).

    Args:
        source: the folder.
        device: where to run (default CPU).
        dtype: the weights' dtype (default: as stored). In float16/bfloat16 the tensors the reference keeps in fp32
            (LayerNorms, the Fourier features, the distance bins, the distogram head:
            ``esmfold2_format.KEEP_IN_FP32``) stay float32, as the reference's ``_keep_in_fp32_modules_strict``.

    Tensors already in their dtype stay memory-mapped from the folder (``weights.cast``); the folder must not be
    rewritten while the model is in use. An MSA encoder in the folder (``biohub/ESMFold2``) is not loaded: the
    model runs single-sequence, as the reference does when it is given no MSA.

    Raises:
        CheckpointError: ``source`` is not an EsmFold2Model folder, its config does not fit its tensors, or a
            tensor is missing or of another shape (the message names the folder and the tensors).
    """
    folder = Path(source)
    if not folder.is_dir():
        raise CheckpointError(f"{source} is not a folder; ESMFold2 loads from a transformers EsmFold2Model folder")
    checkpoint = read_transformers_esmfold2(folder)
    if checkpoint.ignored_msa_encoder:
        logger.info("%s has an MSA encoder; it is not loaded (single-sequence folding, as with no MSA)", folder)
    state = checkpoint.state
    if dtype is not None:
        kept = {key: state.pop(key) for key in checkpoint.keep_fp32} if dtype in HALF else {}
        cast_state_(state, dtype)
        state.update(cast_state_(kept, torch.float32))
    config = EsmFold2Config.from_dict(checkpoint.config)
    esmc_config = ESMCConfig(**checkpoint.esmc_config)
    model = build_from_state(lambda: ESMFold2(config, esmc_config), state, folder)
    return model.to(device=as_device(device) or torch.device("cpu")).eval()
