"""ESMFold hyper-parameters as small dataclasses.

Field names follow the official fair-esm checkpoint config (``cfg["model"]``), so a checkpoint's config dict maps
onto these classes directly; defaults are those of ``esmfold_v1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
