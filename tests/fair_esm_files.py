"""Test helper: a language model's state written in the layout of fair-esm's released ``.pt`` files.

``<stem>.pt`` = ``{**header, "model": state}`` with the keys prefixed as fairseq saved them (the package writer's
``weights.fair_esm_writer.fair_lm_key``), the contact regression in ``<stem>-contact-regression.pt`` beside it.
``header`` holds what the released files carry besides the weights, which the package writer does not write: an
omegaconf ``{"cfg": {"model": ...}}`` for ESM-2 and ESMFold's LM, an argparse ``{"args": Namespace}`` for
ESM-1b/1v and the MSA Transformer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from esmfold_lite.weights.esm2_format import contact_regression_path
from esmfold_lite.weights.fair_esm_writer import REGRESSION_PREFIX, fair_lm_key


def save_fair_lm(
    path: Path,
    state: Mapping[str, torch.Tensor],
    header: Mapping[str, Any],
    regression: Literal["beside", "inside", "none"] = "beside",
) -> Path:
    """Write ``state`` (esmfold_lite's / fair-esm's module names, unprefixed) at ``path``; returns ``path``.

    ``regression``: where the ``contact_head.*`` tensors go: ``"beside"`` (as released: in
    ``<stem>-contact-regression.pt``), ``"inside"`` (prefixed in ``<stem>.pt`` like the other keys, where the config
    checks of ``weights.esm1_format`` see their shapes) or ``"none"`` (not written).
    """
    inside = regression == "inside"
    weights = {fair_lm_key(k): v for k, v in state.items() if inside or not k.startswith(REGRESSION_PREFIX)}
    torch.save({**header, "model": weights}, path)
    if regression == "beside":
        contacts = {k: v for k, v in state.items() if k.startswith(REGRESSION_PREFIX)}
        torch.save({"model": contacts}, contact_regression_path(path))
    return path
