"""Write an ESMFold as the official fair-esm pair: ``esmfold_3B_v1.pt`` (``{"cfg": {"model": config}, "model":
trunk state}``, no ``esm.*`` keys) and, beside it, its ESM-2 ``esm2_t36_3B_UR50D.pt`` (``{"cfg": {"model":
{encoder_layers, ...}}, "model": state}`` with fair-esm's ``encoder.sentence_encoder.`` / ``encoder.`` prefixes) and
``esm2_t36_3B_UR50D-contact-regression.pt``; the names ``load_model`` looks for (``esm2_format`` reads them back).

Plain ``torch.save`` of dicts of tensors, ints, floats, bools and strings: configs are plain dicts (the official files
hold omegaconf objects, which the safe loader maps to such dicts), so ``torch.load(weights_only=True)`` opens them
too. Used by ``esmfold-lite weights make-random`` (``fold.random_model``); `fair_lm_key` also by the tests' writers of
the released files (omegaconf / argparse configs).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.io.atomic import atomic_write_bytes
from esmfold_lite.weights import registry
from esmfold_lite.weights.esm2_format import FAIR_CONFIG_FIELDS, FAIR_PREFIXES, contact_regression_path

State = Mapping[str, torch.Tensor]
REGRESSION_PREFIX = "contact_head."
"""The keys fair-esm keeps in ``<stem>-contact-regression.pt``, unprefixed, rather than in ``<stem>.pt``."""
_LM_HEAD = "lm_head."


def _save(path: Path, data: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def fair_lm_key(key: str) -> str:
    """A language-model key in esmfold_lite's names -> fair-esm's: ``encoder.`` before the LM head's keys,
    ``encoder.sentence_encoder.`` before the others (``esm2_format.strip_fair_prefixes`` undoes it)."""
    encoder, lm_head = FAIR_PREFIXES  # "encoder.sentence_encoder.", "encoder."
    return (lm_head if key.startswith(_LM_HEAD) else encoder) + key


def save_fair_esmfold(
    folder: str | Path, config: Mapping[str, Any], trunk: State, lm_config: Mapping[str, Any], lm: State
) -> tuple[Path, Path]:
    """Write the pair into ``folder`` (created if missing); returns (ESMFold path, LM path).

    Args:
        config: the ESMFold ``cfg["model"]`` (``fold.config.ESMFoldConfig`` fields, nested).
        trunk: the ESMFold state without ``esm.*`` keys.
        lm_config: the ``ESM2Config`` fields (``num_layers``, ``embed_dim``, ``attention_heads``, ``token_dropout``).
        lm: the ESM2 state (esmfold_lite's keys, which are fair-esm's without their prefixes), contact regression
            included (written to the regression file).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = registry.get("esmfold_v1")
    esmfold_path, lm_path = folder / info.filename, folder / registry.get(info.lm).filename
    lm_cfg = {FAIR_CONFIG_FIELDS.get(key, key): value for key, value in lm_config.items() if key != "lm_head"}
    lm_state = {fair_lm_key(key): value for key, value in lm.items() if not key.startswith(REGRESSION_PREFIX)}
    regression = {key: value for key, value in lm.items() if key.startswith(REGRESSION_PREFIX)}
    _save(lm_path, {"cfg": {"model": lm_cfg}, "model": lm_state})
    _save(contact_regression_path(lm_path), {"model": regression})
    _save(esmfold_path, {"cfg": {"model": dict(config)}, "model": dict(trunk)})
    return esmfold_path, lm_path
