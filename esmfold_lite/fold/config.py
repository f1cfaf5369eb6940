"""ESMFold hyper-parameters as small dataclasses, and the check that turns a checkpoint's config dict into them.

Field names follow the official fair-esm checkpoint config (``cfg["model"]``), so a checkpoint's config dict maps
onto these classes directly; defaults are those of ``esmfold_v1``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from esmfold_lite.weights.safe_pickle import CheckpointError

log = logging.getLogger(__name__)

ABLATIONS = ("esm_ablate_pairwise", "esm_ablate_sequence", "bypass_lm")
# Training-only settings of the originals that do not change inference.
IGNORED_FIELDS = {"_name", "layer_drop", "cpu_grad_checkpoint", "fp16_esm", "use_esm_attn_map", "esm_input_dropout"}


@dataclass
class StructureModuleConfig:
    """Structure module (AlphaFold2 Algorithm 20) sizes."""

    c_s: int = 384
    c_z: int = 128
    c_ipa: int = 16
    c_resnet: int = 128
    no_heads_ipa: int = 12
    no_qk_points: int = 4
    no_v_points: int = 8
    dropout_rate: float = 0.1
    no_blocks: int = 8
    no_transition_layers: int = 1
    no_resnet_blocks: int = 2
    no_angles: int = 7
    trans_scale_factor: float = 10.0
    epsilon: float = 1e-8
    inf: float = 1e5


@dataclass
class TrunkConfig:
    """Folding trunk sizes: c_s = ``sequence_state_dim``, c_z = ``pairwise_state_dim``."""

    num_blocks: int = 48
    sequence_state_dim: int = 1024
    pairwise_state_dim: int = 128
    sequence_head_width: int = 32
    pairwise_head_width: int = 32
    position_bins: int = 32
    dropout: float = 0.0
    max_recycles: int = 4
    chunk_size: int | None = None
    structure_module: StructureModuleConfig = field(default_factory=StructureModuleConfig)


@dataclass
class ESMFoldConfig:
    """Whole model: trunk plus head sizes. ``esm_type`` names the ESM-2 language model the trunk reads."""

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    lddt_head_hid_dim: int = 128
    esm_type: str = "esm2_3B"
    distogram_bins: int = 64
    lddt_bins: int = 50
    ptm_bins: int = 64
    # True for a model of randomized weights (``esmfold-lite weights make-random``): every output says so
    esmfold_lite_random_weights: bool = False


def _dataclass_from(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known - IGNORED_FIELDS
    if unknown:
        log.warning("ignoring unknown %s settings %s", where, sorted(unknown))
    return cls(**{k: v for k, v in values.items() if k in known})


def esmfold_config_from_dict(model_cfg: Mapping[str, Any]) -> ESMFoldConfig:
    """A checkpoint's model config dict (official field names, as ``weights.esmfold_format`` reads it) → config.

    Unknown settings are logged and ignored; ablations esmfold_lite does not implement raise ``CheckpointError``.
    """
    trunk = dict(model_cfg.get("trunk") or {})
    structure = dict(trunk.pop("structure_module", None) or {})
    for flag in ABLATIONS:
        if model_cfg.get(flag):
            raise CheckpointError(f"checkpoint config sets {flag}=True, an ablation esmfold_lite does not implement")
    if model_cfg.get("embed_aa") is False:
        raise CheckpointError("checkpoint config sets embed_aa=False, which esmfold_lite does not implement")
    top = {k: v for k, v in model_cfg.items() if k not in ("trunk", "embed_aa", *ABLATIONS)}
    config = _dataclass_from(ESMFoldConfig, top, "ESMFold")
    config.trunk = _dataclass_from(TrunkConfig, trunk, "trunk")
    config.trunk.structure_module = _dataclass_from(StructureModuleConfig, structure, "structure module")
    return config
