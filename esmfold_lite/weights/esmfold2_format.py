"""transformers' ``EsmFold2Model`` state dict -> ours (``esmfold2.model.ESMFold2``): every key is the same except the
bundled ESM C's (``esmc.*``), renamed by ``esmc_format.transformers_to_esmc_state_dict`` and kept under ``esmc.``."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from esmfold_lite.weights.esmc_format import State, transformers_to_esmc_state_dict

ESMC_PREFIX = "esmc."


def esmfold2_state_from_transformers(state: Mapping[str, torch.Tensor]) -> State:
    """A transformers ``EsmFold2Model`` state dict -> the ``ESMFold2`` names (tensors shared, not copied); a key
    neither model has comes back as it is, so a strict load reports it."""
    esmc = {key.removeprefix(ESMC_PREFIX): value for key, value in state.items() if key.startswith(ESMC_PREFIX)}
    renamed: State = {key: value for key, value in state.items() if not key.startswith(ESMC_PREFIX)}
    renamed.update({ESMC_PREFIX + key: value for key, value in transformers_to_esmc_state_dict(esmc).items()})
    return renamed
