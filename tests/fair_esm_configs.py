"""Test helper: fair-esm's ESMFold config dataclasses at their real module paths, for writing structured configs.

fair-esm's ``esm.esmfold.v1`` imports openfold and cannot be imported here, so these dataclasses repeat its config
fields (names and defaults of ``esm/esmfold/v1/trunk.py`` and ``esmfold.py``) and :func:`fair_esm_config_classes`
registers them as ``esm.esmfold.v1.trunk.StructureModuleConfig``, ``esm.esmfold.v1.trunk.FoldingTrunkConfig`` and
``esm.esmfold.v1.esmfold.ESMFoldConfig`` while a structured config is pickled, exactly as the original names them.
"""

# No ``from __future__ import annotations``: omegaconf reads the field types from the (fake) module they live in.
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

TRUNK_MODULE = "esm.esmfold.v1.trunk"
ESMFOLD_MODULE = "esm.esmfold.v1.esmfold"


@dataclass
class StructureModuleConfig:
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
    trans_scale_factor: int = 10
    epsilon: float = 1e-8
    inf: float = 1e5


@dataclass
class FoldingTrunkConfig:
    _name: str = "FoldingTrunkConfig"
    num_blocks: int = 48
    sequence_state_dim: int = 1024
    pairwise_state_dim: int = 128
    sequence_head_width: int = 32
    pairwise_head_width: int = 32
    position_bins: int = 32
    dropout: float = 0
    layer_drop: float = 0
    cpu_grad_checkpoint: bool = False
    max_recycles: int = 4
    chunk_size: Optional[int] = None  # noqa: UP045 (fair-esm's annotation, pickled as typing metadata)
    structure_module: StructureModuleConfig = field(default_factory=StructureModuleConfig)


@dataclass
class ESMFoldConfig:
    trunk: Any = field(default_factory=FoldingTrunkConfig)
    lddt_head_hid_dim: int = 128


CLASSES = {StructureModuleConfig: TRUNK_MODULE, FoldingTrunkConfig: TRUNK_MODULE, ESMFoldConfig: ESMFOLD_MODULE}


@contextmanager
def registered_at(classes: Mapping[type, str]) -> Iterator[None]:
    """While active, each class is importable as ``<module>.<its name>`` (``pickle`` looks classes up there)."""
    added, original = [], {cls: cls.__module__ for cls in classes}
    for cls, module_name in classes.items():
        module = sys.modules.get(module_name)
        if module is None:
            module = sys.modules[module_name] = types.ModuleType(module_name)
            added.append(module_name)
        cls.__module__ = module_name
        setattr(module, cls.__name__, cls)
    try:
        yield
    finally:
        for module_name in added:
            del sys.modules[module_name]
        for cls, module_name in original.items():
            cls.__module__ = module_name


def fair_esm_config_classes():
    """While active, the three config classes live at fair-esm's module paths."""
    return registered_at(CLASSES)


def structured_esmfold_cfg(plain: dict) -> DictConfig:
    """``OmegaConf.structured(ESMFoldConfig(...))`` holding the values of a plain ESMFold model cfg dict."""
    trunk = {k: v for k, v in plain["trunk"].items() if k != "structure_module"}
    config = ESMFoldConfig(
        trunk=FoldingTrunkConfig(**trunk, structure_module=StructureModuleConfig(**plain["trunk"]["structure_module"])),
        lddt_head_hid_dim=plain["lddt_head_hid_dim"],
    )
    return OmegaConf.structured(config)
