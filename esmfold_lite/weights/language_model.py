"""Any language-model checkpoint at a path -> ``LanguageModelCheckpoint(kind, config dict, state dict, ...)``.

``kind`` names the architecture, and with it the model config the dict fills: ``"esm2"`` (``lm.esm2.ESM2Config``),
``"esm1b"`` (ESM-1b and ESM-1v, ``lm.esm1.ESM1Config``), ``"msa"`` (``lm.msa_transformer.MSATransformerConfig``) or
``"esmc"`` (``lm.esmc.ESMCConfig``). The format is recognised from the path: esmfold_lite's own pair, a transformers
folder, or a pickle (whose content says which model it holds: a fair-esm ``.pt`` or an official ESM C ``.pth``).
That recognition (`_open`) is shared by `read_language_model` and `peek_language_model`, which stops at the kind and
config (a json, a config.json and safetensors header, a memory-mapped pickle) without reading a tensor.
``esmfold_lite.lm.load`` builds the model; nothing here imports one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.config_check import check_config
from esmfold_lite.weights.esm1_format import ESM1V_REGRESSION_HINT, fair_esm1_config, read_fair_esm1
from esmfold_lite.weights.esm1_format import regression_hint as fair_esm1_regression_hint
from esmfold_lite.weights.esm2_format import (
    TRANSFORMERS_REGRESSION_HINT,
    checkpoint_kind,
    complete_lm_state,
    contact_regression_missing,
    fair_esm2_config,
    fair_regression_hint,
    lone_file_error,
    read_fair_esm2,
    read_transformers_esm2,
    transformers_esm2_config,
)
from esmfold_lite.weights.esmc_format import is_official_esmc, read_official_esmc
from esmfold_lite.weights.own_format import load_own_format, own_format_meta, own_format_shapes
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

LANGUAGE_MODEL_KINDS = ("esm2", "esm1b", "msa", "esmc")
CONVERTED_REGRESSION_HINT = (
    "a converted file lacks them when the <name>-contact-regression.pt of its .pt was not beside the .pt at "
    "conversion: put it there and convert again (esmfold-lite weights convert NAME.pt OUT)"
)


@dataclass
class LanguageModelCheckpoint:
    """What a language-model checkpoint holds.

    Attributes:
        kind: the architecture: one of ``LANGUAGE_MODEL_KINDS``.
        config: the fields of that architecture's config dataclass.
        state: tensors under the model's parameter names (complete: tied and filled-in entries added).
        missing_contact_regression: None when the checkpoint has its contact regression (or the model has no contact
            head); else the state holds zeros in its place and this says why and how to get it (for this format and
            kind: ESM-1v was released without one; a fair-esm ``.pt`` needs its ``<stem>-contact-regression.pt``
            beside it; a converted file must be converted again with it).
    """

    kind: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    missing_contact_regression: str | None = None


@dataclass
class _Opened:
    """A recognised checkpoint: what the headers say, and how to read the rest."""

    kind: str
    config: dict[str, Any]
    read_state: Callable[[], dict[str, torch.Tensor]]
    regression_hint: str | None  # where a missing contact regression comes from; None: the model has no contact head


def read_language_model(path: str | Path) -> LanguageModelCheckpoint:
    """Read the language model at an existing ``path`` in any supported format.

    Raises:
        CheckpointError: not a language-model checkpoint of a supported kind (the message names the file and why).
    """
    opened = _open(Path(path))
    state = opened.read_state()
    hint = opened.regression_hint
    missing = hint if hint is not None and contact_regression_missing(state) else None
    return LanguageModelCheckpoint(opened.kind, opened.config, state, missing)


def peek_language_model(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(kind, config dict)`` of the language model at an existing ``path``, read without its tensors: the checks of
    `read_language_model` on what a file is, at the cost of a json, a safetensors header or a memory-mapped pickle.

    Raises:
        CheckpointError: as `read_language_model` would, for what is not a language-model checkpoint it reads.
    """
    opened = _open(Path(path))
    return opened.kind, opened.config


def _open(path: Path) -> _Opened:
    """Recognise the format and kind at ``path`` (see the module docstring); raises ``CheckpointError`` naming it."""
    meta = own_format_meta(path)
    if meta is not None:
        kind = meta.get("kind")
        if kind not in LANGUAGE_MODEL_KINDS:
            fix = ": load it with esmfold_lite.load_model" if kind == "esmfold" else ""
            raise CheckpointError(f"{path} holds an esmfold_lite {kind!r} checkpoint, not a language model{fix}")
        config = meta.get("config") or {}
        check_config(path, kind, config, own_format_shapes(path), lambda field: f"config.{field}")
        return _Opened(kind, config, lambda: _read_own(path), _converted_regression_hint(kind))
    if path.is_dir():
        config = transformers_esm2_config(path)
        return _Opened("esm2", config, lambda: read_transformers_esm2(path)[1], TRANSFORMERS_REGRESSION_HINT)
    if path.suffix in (".safetensors", ".json"):
        raise lone_file_error(path)
    data = load_checkpoint(path)  # memory-mapped: no tensor is read until used
    if is_official_esmc(data):
        config, state = read_official_esmc(path, data)  # renames keys and reads shapes only
        return _Opened("esmc", config, lambda: state, None)
    kind = checkpoint_kind(data)
    if kind in ("esm1b", "esm1", "msa"):
        kind, config = fair_esm1_config(path, data)  # refuses the original ESM-1
        return _Opened(kind, config, lambda: read_fair_esm1(path, data)[2], fair_esm1_regression_hint(path))
    if kind == "unknown":
        raise CheckpointError(
            f"not a checkpoint: {path} is not a fair-esm language model; expected a dict with 'model' (the state "
            "dict) and 'cfg' (ESM-2) or 'args' with arch 'roberta_large' (ESM-1b/1v) or 'msa_transformer', or an "
            "ESM C state dict (embed.weight, transformer.blocks.N.*, sequence_head.*)"
        )
    config = fair_esm2_config(path, data)  # an ESMFold file raises, naming the fix
    return _Opened("esm2", config, lambda: read_fair_esm2(path, data)[1], fair_regression_hint(path))


def _read_own(path: Path) -> dict[str, torch.Tensor]:
    kind, config, state = load_own_format(path)
    return state if kind == "esmc" else complete_lm_state(state, config, str(path))  # ESM C: complete as saved


def _converted_regression_hint(kind: str) -> str | None:
    """Where the contact regression of a file in esmfold_lite's own format comes from (None: ESM C has no contact
    head). Such a file of kind "esm1b" may be ESM-1b or ESM-1v."""
    if kind == "esmc":
        return None
    if kind == "esm1b":
        return f"{ESM1V_REGRESSION_HINT}; for ESM-1b, {CONVERTED_REGRESSION_HINT}"
    return CONVERTED_REGRESSION_HINT
