"""ESMFold checkpoints in their three formats → ``(config dict, trunk state, LM config dict | None, LM state | None)``.

The config dict is the checkpoint's model config in the official (fair-esm) field names, nested like
``esmfold_lite.fold.config.ESMFoldConfig`` (``{"trunk": {..., "structure_module": {...}}, ...}``); the LM config dict
holds the ``ESM2Config`` fields. ``esmfold_lite.fold.load`` checks and builds the model; nothing here imports one.

* fair-esm ``esmfold_3B_v1.pt``: ``{"cfg": {"model": {"trunk": {...}, "lddt_head_hid_dim": ...}}, "model": state}``
  with no ``esm.*`` keys; the LM is a separate ESM-2 checkpoint (``esm2_t36_3B_UR50D.pt``).
* transformers ``facebook/esmfold_v1`` folder: ``config.json`` (``esmfold_config`` with transformers' field names
  for the structure module) + weights; trunk keys equal fair-esm's, LM keys are transformers' ``esm.*``.
* esmfold_lite's own format, kind ``"esmfold"``: config ``{"esmfold": ..., "lm": ...}``, LM under ``esm.*``.

Trunk state dicts come back without ``esm.*`` keys and without the ``af2_to_esm`` buffer (recomputed). Every reader
checks the configs against the tensor shapes first (``config_check``), naming each field as its file does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.config_check import check_config, config_problems, refuse_config, state_shapes
from esmfold_lite.weights.esm2_format import (
    Config,
    checkpoint_kind,
    complete_lm_state,
    esm2_config_from_hf,
    hf_to_esm2_state_dict,
    read_transformers_state,
    transformers_esm2_problems,
)
from esmfold_lite.weights.own_format import is_own_format, load_own_format, save_own_format
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

State = dict[str, torch.Tensor]
LM_PREFIX = "esm."
DROPPED_KEYS = ("af2_to_esm",)

# transformers' StructureModuleConfig field → the official (fair-esm) name.
HF_STRUCTURE_FIELDS = {
    "sequence_dim": "c_s",
    "pairwise_dim": "c_z",
    "ipa_dim": "c_ipa",
    "resnet_dim": "c_resnet",
    "num_heads_ipa": "no_heads_ipa",
    "num_qk_points": "no_qk_points",
    "num_v_points": "no_v_points",
    "num_blocks": "no_blocks",
    "num_transition_layers": "no_transition_layers",
    "num_resnet_blocks": "no_resnet_blocks",
    "num_angles": "no_angles",
}
_OFFICIAL_TO_HF_STRUCTURE = {official: hf for hf, official in HF_STRUCTURE_FIELDS.items()}
_STRUCTURE = "trunk.structure_module."


# What every transformers config writes about itself; transformers 5 writes it into the nested configs of
# ``esmfold_config`` (trunk, structure module) too. Not settings of the model.
HF_CONFIG_BASE_FIELDS = frozenset({
    "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype", "id2label", "label2id",
    "is_encoder_decoder", "model_type", "output_attentions", "output_hidden_states", "problem_type", "return_dict",
    "transformers_version",
})  # fmt: skip


def official_structure_names(model_cfg: Mapping[str, Any]) -> Config:
    """transformers' ``esmfold_config`` dict → the same config with fair-esm's structure-module field names, without
    transformers' own bookkeeping fields (``HF_CONFIG_BASE_FIELDS``)."""

    def settings(values: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (values or {}).items() if k not in HF_CONFIG_BASE_FIELDS}

    config = settings(model_cfg)
    trunk = settings(config.get("trunk"))
    structure = settings(trunk.get("structure_module"))
    trunk["structure_module"] = {HF_STRUCTURE_FIELDS.get(k, k): v for k, v in structure.items()}
    config["trunk"] = trunk
    return config


def _split(state: Mapping[str, torch.Tensor]) -> tuple[State, State]:
    """Checkpoint tensors → (trunk state, LM state with the ``esm.`` prefix removed)."""
    trunk = {k: v for k, v in state.items() if not k.startswith(LM_PREFIX) and k not in DROPPED_KEYS}
    lm = {k[len(LM_PREFIX) :]: v for k, v in state.items() if k.startswith(LM_PREFIX)}
    return trunk, lm


def hf_esmfold_field(field: str) -> str:
    """An ESMFold config field (official names, dotted) → its path in a transformers ``config.json``."""
    if field.startswith(_STRUCTURE):
        name = field[len(_STRUCTURE) :]
        field = _STRUCTURE + _OFFICIAL_TO_HF_STRUCTURE.get(name, name)
    return f"esmfold_config.{field}"


def read_fair_esmfold(path: Path) -> tuple[Config, State]:
    data = load_checkpoint(path)
    kind = checkpoint_kind(data)
    if kind != "esmfold":
        raise CheckpointError(
            f"{path} is not an ESMFold checkpoint (it looks like {kind!r}); expected esmfold_3B_v1.pt-style "
            "{'cfg': {'model': {'trunk': ...}}, 'model': state_dict}"
        )
    trunk, _ = _split(data["model"])
    config = dict(data["cfg"]["model"])
    check_config(path, "esmfold", config, state_shapes(trunk), lambda field: f"cfg.model.{field}")
    return config, trunk


def read_transformers_esmfold(folder: Path) -> tuple[Config, State, Config, State]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"expected config.json in folder {folder} (a transformers ESMFold model folder)")
    config = json.loads(config_path.read_text())
    if not config.get("is_folding_model"):
        raise CheckpointError(f"{config_path} is not an ESMFold config (is_folding_model is not true)")
    esmfold_config = official_structure_names(config.get("esmfold_config") or {})
    lm_config = esm2_config_from_hf({**config, "is_folding_model": False}, config_path)
    trunk, hf_lm = _split(read_transformers_state(folder))
    lm_problems = transformers_esm2_problems(lm_config, state_shapes(hf_lm))
    trunk_problems = config_problems("esmfold", esmfold_config, state_shapes(trunk), hf_esmfold_field)
    refuse_config(config_path, lm_problems + trunk_problems)
    lm_state = hf_to_esm2_state_dict({LM_PREFIX + k: v for k, v in hf_lm.items()})
    lm_config["lm_head"] = any(k.startswith("lm_head.") for k in lm_state)
    return esmfold_config, trunk, lm_config, complete_lm_state(lm_state, lm_config, str(folder))


def read_own_esmfold(path: Path) -> tuple[Config, State, Config, State]:
    kind, config, state = load_own_format(path)
    if kind != "esmfold":
        raise CheckpointError(f"{path} holds an esmfold_lite {kind!r} checkpoint, not ESMFold; use load_language_model")
    trunk, lm = _split(state)
    trunk_problems = config_problems("esmfold", config["esmfold"], state_shapes(trunk), "config.esmfold.{}".format)
    lm_problems = config_problems("esm2", config["lm"], state_shapes(lm), "config.lm.{}".format)
    refuse_config(path, lm_problems + trunk_problems)
    return config["esmfold"], trunk, config["lm"], lm


def read_esmfold(path: Path) -> tuple[Config, State, Config | None, State | None]:
    """Any supported ESMFold checkpoint at an existing ``path``; the LM parts are None for fair-esm files."""
    if is_own_format(path):
        return read_own_esmfold(path)
    if path.is_dir():
        return read_transformers_esmfold(path)
    config, trunk = read_fair_esmfold(path)
    return config, trunk, None, None


def save_esmfold(model: torch.nn.Module, path: str | Path) -> Path:
    """Write an ``ESMFold`` (trunk + LM) in esmfold_lite's own format; returns the stem."""
    config = {"esmfold": asdict(model.cfg), "lm": asdict(model.esm.config)}
    return save_own_format(path, "esmfold", config, model.state_dict())
