"""ESMFold2 hyper-parameters as small dataclasses, built from a transformers ``EsmFold2Config`` dict.

Field names and defaults are those of transformers' ``configuration_esmfold2.py`` (``EsmFold2Config`` and its
sub-configs), so ``EsmFold2Config.from_dict(json.load(open("config.json")))`` (or ``config.to_dict()``) maps onto
them directly. Keys these classes do not know (``architectures``, ``dtype``, ``transformers_version``, ...) are
ignored. Derived sizes (``head_dim``, ``atom_feature_dim``) are filled in as the reference does.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self


class _FromDict:
    """``from_dict`` for a dataclass whose fields may be dataclasses themselves (sub-configs, built recursively)."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """The config of a transformers config dict; unknown keys are ignored, missing ones take the defaults."""
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in values or values[f.name] is None:
                continue
            value, kind = values[f.name], hints[f.name]
            if isinstance(kind, type) and issubclass(kind, _FromDict) and isinstance(value, Mapping):
                value = kind.from_dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass
class AtomEncoderConfig(_FromDict):
    """Sliding-window atom transformer with 3D RoPE (the input embedder's and the denoiser's atom stacks)."""

    hidden_size: int = 128
    output_dim: int = 384
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    intermediate_size: int = 256
    spatial_rope_base_frequency: float = 20.0
    num_spatial_rope_pairs_per_axis: int = 2
    num_uid_rope_pairs: int = 10
    uid_rope_base_frequency: float = 10000.0

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        pairs = 3 * self.num_spatial_rope_pairs_per_axis + self.num_uid_rope_pairs
        if pairs > self.head_dim // 2:
            raise ValueError(
                f"the 3D rotary embedding needs {pairs} frequency pairs, a head of {self.head_dim} has "
                f"{self.head_dim // 2}"
            )


@dataclass
class DiffusionModuleConfig(_FromDict):
    """The denoiser: atom encoder/decoder around a token transformer with pair bias (EDM preconditioning)."""

    sigma_data: float = 16.0
    hidden_size: int = 768
    fourier_dim: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    intermediate_size: int = 1536
    pair_intermediate_size: int = 512
    atom_encoder: AtomEncoderConfig = field(default_factory=lambda: AtomEncoderConfig(output_dim=768))

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.atom_encoder.output_dim != self.hidden_size:
            raise ValueError(
                f"diffusion atom_encoder.output_dim ({self.atom_encoder.output_dim}) is not the token "
                f"width hidden_size ({self.hidden_size})"
            )


@dataclass
class StructureHeadConfig(_FromDict):
    """Distogram bins and the diffusion sampler's noise schedule (``inference_sigma_cap`` is an absolute sigma)."""

    diffusion_module: DiffusionModuleConfig = field(default_factory=DiffusionModuleConfig)
    num_distogram_bins: int = 128
    num_diffusion_samples: int = 8
    gamma_0: float = 0.605
    gamma_min: float = 1.107
    noise_scale: float = 0.0
    step_scale: float = 1.0
    inference_sigma_max_ratio: float = 160.0
    inference_sigma_min_ratio: float = 4e-4
    inference_exponent: float = 8.0
    inference_num_steps: int = 68
    inference_sigma_cap: float = 256.0


@dataclass
class ConfidenceHeadConfig(_FromDict):
    """pLDDT / PAE / PDE / resolved heads over the head's own pair-update trunk."""

    num_hidden_layers: int = 4
    num_plddt_bins: int = 50
    num_pde_bins: int = 64
    num_pae_bins: int = 64
    min_dist: float = 2.0
    max_dist: float = 52.0
    distogram_bins: int = 128
    eps: float = 1e-6


@dataclass
class MsaEncoderConfig(_FromDict):
    """The MSA encoder's sizes; ``enabled=False`` (ESMFold2-Fast) means the checkpoint has none."""

    hidden_size: int = 128
    outer_hidden_size: int = 32
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    head_dim: int = 32
    intermediate_size: int = 512
    outer_product_chunk_size: int | None = None
    enabled: bool = True


@dataclass
class LmEncoderConfig(_FromDict):
    """Pair-update blocks refining the projected ESM C states, and the LM dropout the reference applies (at
    inference too, resampled every loop when ``per_loop_lm_dropout``)."""

    num_hidden_layers: int = 4
    lm_dropout: float = 0.25
    per_loop_lm_dropout: bool = True


@dataclass
class EsmcSizes(_FromDict):
    """The sizes of the bundled ESM C (transformers ``EsmcConfig`` names) that the LM encoder reads: one hidden
    state per layer plus the embeddings, of width ``hidden_size``. Defaults: ESM C 6B."""

    hidden_size: int = 2560
    num_hidden_layers: int = 80


@dataclass
class EsmFold2Config(_FromDict):
    """The whole model (transformers ``EsmFold2Config``): c_s = ``hidden_size``, c_z = ``pairwise_hidden_size``."""

    hidden_size: int = 384
    pairwise_hidden_size: int = 256
    single_inputs_size: int = 451
    pair_transition_intermediate_size: int = 1024
    sliding_window: int = 128
    chunk_size: int | None = 64
    num_relative_residx_bins: int = 32
    num_relative_chain_bins: int = 2
    num_loops: int = 10
    num_res_types: int = 33
    max_atomic_number: int = 128
    char_vocab_size: int = 64
    max_chars: int = 4
    max_atoms_per_token: int = 23
    atom_feature_dim: int | None = None  # None: xyz, charge, mask + element and atom-name-char one-hots
    folding_trunk_num_hidden_layers: int = 24
    parcae_num_coda_layers: int = 2
    atom_encoder: AtomEncoderConfig = field(default_factory=AtomEncoderConfig)
    structure_head: StructureHeadConfig = field(default_factory=StructureHeadConfig)
    confidence_head: ConfidenceHeadConfig = field(default_factory=ConfidenceHeadConfig)
    msa_encoder: MsaEncoderConfig = field(default_factory=MsaEncoderConfig)
    lm_encoder: LmEncoderConfig = field(default_factory=LmEncoderConfig)
    esmc_config: EsmcSizes = field(default_factory=EsmcSizes)

    def __post_init__(self) -> None:
        if self.atom_feature_dim is None:
            self.atom_feature_dim = 3 + 1 + 1 + self.max_atomic_number + self.char_vocab_size * self.max_chars
        expected = self.single_inputs_size - (2 * self.num_res_types + 1)
        if self.atom_encoder.output_dim != expected:
            raise ValueError(
                f"atom_encoder.output_dim ({self.atom_encoder.output_dim}) is not single_inputs_size "
                f"({self.single_inputs_size}) - (2 * num_res_types + 1) = {expected}"
            )
