"""Any language-model checkpoint at a path -> ``LanguageModelCheckpoint(kind, config dict, state dict)``.

``kind`` names the architecture, and with it the model config the dict fills: ``"esm2"`` (``lm.esm2.ESM2Config``),
``"esm1b"`` (ESM-1b and ESM-1v, ``lm.esm1.ESM1Config``), ``"msa"`` (``lm.msa_transformer.MSATransformerConfig``) or
``"esmc"`` (``lm.esmc.ESMCConfig``). The format is recognised from the path: esmfold_lite's own pair, a transformers
folder, or a pickle (whose content says which model it holds: a fair-esm ``.pt`` or an official ESM C ``.pth``).
``esmfold_lite.lm.load`` builds the model; nothing here imports one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.esm1_format import read_fair_esm1
from esmfold_lite.weights.esm2_format import (
    checkpoint_kind,
    complete_lm_state,
    read_esm2,
    read_fair_esm2,
    read_transformers_esm2,
)
from esmfold_lite.weights.esmc_format import is_official_esmc, read_official_esmc
from esmfold_lite.weights.own_format import is_own_format, load_own_format
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

LANGUAGE_MODEL_KINDS = ("esm2", "esm1b", "msa", "esmc")


@dataclass
class LanguageModelCheckpoint:
    """What a language-model checkpoint holds.

    Attributes:
        kind: the architecture: one of ``LANGUAGE_MODEL_KINDS``.
        config: the fields of that architecture's config dataclass.
        state: tensors under the model's parameter names (complete: tied and filled-in entries added).
    """

    kind: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def read_language_model(path: str | Path) -> LanguageModelCheckpoint:
    """Read the language model at an existing ``path`` in any supported format.

    Raises:
        CheckpointError: not a language-model checkpoint of a supported kind (the message names the file and why).
    """
    path = Path(path)
    if is_own_format(path):
        kind, config, state = load_own_format(path)
        if kind not in LANGUAGE_MODEL_KINDS:
            raise CheckpointError(f"{path} holds an esmfold_lite {kind!r} checkpoint, not a language model")
        if kind == "esmc":  # complete as saved: no tied head, no contact regression
            return LanguageModelCheckpoint(kind, config, state)
        return LanguageModelCheckpoint(kind, config, complete_lm_state(state, config, str(path)))
    if path.is_dir():
        return LanguageModelCheckpoint("esm2", *read_transformers_esm2(path))
    if path.suffix in (".safetensors", ".json"):
        return LanguageModelCheckpoint("esm2", *read_esm2(path))  # raises its "lone file" error
    data = load_checkpoint(path)
    if is_official_esmc(data):
        return LanguageModelCheckpoint("esmc", *read_official_esmc(path, data))
    kind = checkpoint_kind(data)
    if kind in ("esm1b", "esm1", "msa"):
        return LanguageModelCheckpoint(*read_fair_esm1(path, data))
    if kind == "unknown":
        raise CheckpointError(
            f"not a checkpoint: {path} is not a fair-esm language model; expected a dict with 'model' (the state "
            "dict) and 'cfg' (ESM-2) or 'args' with arch 'roberta_large' (ESM-1b/1v) or 'msa_transformer', or an "
            "ESM C state dict (embed.weight, transformer.blocks.N.*, sequence_head.*)"
        )
    return LanguageModelCheckpoint("esm2", *read_fair_esm2(path, data))  # an ESMFold file raises, naming the fix
