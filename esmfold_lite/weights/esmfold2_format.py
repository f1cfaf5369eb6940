"""transformers' ``EsmFold2Model`` folder (config.json + safetensors, the official format) -> config dicts and our
state dict (``esmfold2.model.ESMFold2``): every key is the same except the bundled ESM C's (``esmc.*``), renamed by
``esmc_format.transformers_to_esmc_state_dict`` and kept under ``esmc.``. ``esmfold2.load`` builds the model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.config_check import config_problems, refuse_config, state_shapes
from esmfold_lite.weights.esm2_format import read_transformers_state
from esmfold_lite.weights.esmc_format import State, esmc_config_from_transformers, transformers_to_esmc_state_dict
from esmfold_lite.weights.safe_pickle import CheckpointError

ESMC_PREFIX = "esmc."


def esmfold2_state_from_transformers(state: Mapping[str, torch.Tensor]) -> State:
    """A transformers ``EsmFold2Model`` state dict -> the ``ESMFold2`` names (tensors shared, not copied); a key
    neither model has comes back as it is, so a strict load reports it."""
    esmc = {key.removeprefix(ESMC_PREFIX): value for key, value in state.items() if key.startswith(ESMC_PREFIX)}
    renamed: State = {key: value for key, value in state.items() if not key.startswith(ESMC_PREFIX)}
    renamed.update({ESMC_PREFIX + key: value for key, value in transformers_to_esmc_state_dict(esmc).items()})
    return renamed


# ---- a transformers EsmFold2Model folder: detection, config, memory-mapped tensors, config check

MODEL_TYPE = "esmfold2"
ARCHITECTURE = "EsmFold2Model"
MSA_ENCODER_PREFIX = "msa_encoder."
KEEP_IN_FP32 = ("fourier", "norm.weight", "norm.bias", "norm_mix", "norm_start", "norm_single", "boundaries",
                "distogram_head", "parcae.log_delta")  # fmt: skip
"""Tensors whose name contains one of these stay fp32 when the model runs in bf16 or fp16, as in the reference: its
``_keep_in_fp32_modules_strict``, and ``parcae.log_delta``, which it creates as float32."""
_ESMC_FIELDS = {"num_layers": "num_hidden_layers", "embed_dim": "hidden_size", "ffn_dim": "intermediate_size",
                "attention_heads": "num_attention_heads"}  # fmt: skip


@dataclass
class EsmFold2Checkpoint:
    """A transformers ``EsmFold2Model`` folder read: ``config`` its config.json (the MSA encoder switched off when
    the folder has one: ``ignored_msa_encoder``), ``esmc_config`` the ``ESMCConfig`` fields, ``state`` our names
    (memory-mapped), ``keep_fp32`` the keys that stay fp32 in half precision."""

    config: dict[str, Any]
    esmc_config: dict[str, Any]
    state: State
    keep_fp32: frozenset[str]
    ignored_msa_encoder: bool


def is_transformers_esmfold2(folder: str | Path) -> bool:
    """Whether ``folder`` holds a config.json of an ``EsmFold2Model`` (``model_type`` or ``architectures``)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and (
        config.get("model_type") == MODEL_TYPE or ARCHITECTURE in (config.get("architectures") or [])
    )


def read_transformers_esmfold2(folder: str | Path) -> EsmFold2Checkpoint:
    """The config and memory-mapped tensors of a transformers ``EsmFold2Model`` folder (``model.safetensors``, or
    the shards of ``model.safetensors.index.json``), checked against each other before anything is built.

    A folder with an MSA encoder (``biohub/ESMFold2``) is read without it: the reference skips its MSA encoder
    when no MSA is given, which is how this model runs (single sequence).

    Raises:
        CheckpointError: not an EsmFold2Model folder, or its config does not fit its tensors (naming each field as
            config.json spells it).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not is_transformers_esmfold2(folder):
        raise CheckpointError(
            f"{config_path} is not the config of a transformers EsmFold2Model (model_type {MODEL_TYPE!r}); expected a "
            "folder written by EsmFold2Model.save_pretrained (config.json + model.safetensors)"
        )
    config = json.loads(config_path.read_text())
    esmc_values = config.get("esmc_config") or {}
    esmc_config = esmc_config_from_transformers(esmc_values, f"{config_path} (esmc_config)")
    hf_state = read_transformers_state(folder)
    msa = (config.get("msa_encoder") or {}).get("enabled", True)
    hf_state = {k: v for k, v in hf_state.items() if not k.startswith(MSA_ENCODER_PREFIX)}
    state = esmfold2_state_from_transformers(hf_state)
    # our ESM C names keep the reference's norm suffixes (norm.weight, q_norm.weight, ...): the same tensors match
    keep = {key for key in state if any(pattern in key for pattern in KEEP_IN_FP32)}
    shapes = state_shapes(state)
    esmc_shapes = {k.removeprefix(ESMC_PREFIX): v for k, v in shapes.items() if k.startswith(ESMC_PREFIX)}
    problems = config_problems(MODEL_TYPE, config, shapes)
    problems += config_problems(
        "esmc", esmc_config, esmc_shapes, lambda field: f"esmc_config.{_ESMC_FIELDS.get(field, field)}"
    )
    refuse_config(config_path, problems)
    config = {**config, "msa_encoder": {**(config.get("msa_encoder") or {}), "enabled": False}}
    return EsmFold2Checkpoint(config, esmc_config, state, frozenset(keep), bool(msa))
