"""transformers' ESMFold2 (the reference) at a tiny size, for the ``test_esmfold2_*`` parity tests.

``tiny_reference_config()`` is a transformers ``EsmFold2Config`` whose every width is small but keeps the
reference's relations (single_inputs_size = atom output + 2·num_res_types + 1, the atom heads wide enough for the
3D rotary pairs); ``chunk_size`` is smaller than the test lengths so the reference's own chunking runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from randomize import randomize_
from transformers.models.esmfold2 import modeling_esmfold2 as reference
from transformers.models.esmfold2 import protein_utils
from transformers.models.esmfold2.configuration_esmfold2 import EsmFold2Config as ReferenceConfig

from esmfold_lite.esmfold2.atom_transformer import AtomInputs

NUM_RES_TYPES = 33


def tiny_reference_config(**overrides: Any) -> ReferenceConfig:
    """A small transformers ``EsmFold2Config``; ``overrides`` replace top-level fields."""
    atom = dict(
        hidden_size=32,
        output_dim=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        num_spatial_rope_pairs_per_axis=1,
        num_uid_rope_pairs=3,
    )
    settings: dict[str, Any] = dict(
        hidden_size=24,
        pairwise_hidden_size=16,
        single_inputs_size=24 + 2 * NUM_RES_TYPES + 1,
        pair_transition_intermediate_size=32,
        sliding_window=8,
        chunk_size=3,
        num_relative_residx_bins=4,
        num_loops=2,
        max_atomic_number=16,
        char_vocab_size=8,
        folding_trunk_num_hidden_layers=2,
        parcae_num_coda_layers=1,
        atom_encoder=atom,
        structure_head=dict(
            num_distogram_bins=10,
            diffusion_module=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                fourier_dim=16,
                intermediate_size=48,
                pair_intermediate_size=24,
                atom_encoder={**atom, "output_dim": 32},
            ),
        ),
        confidence_head=dict(num_hidden_layers=1, num_plddt_bins=5, num_pde_bins=6, num_pae_bins=7, distogram_bins=9),
        msa_encoder=dict(enabled=False),
        lm_encoder=dict(num_hidden_layers=1),
        esmc_config=dict(
            model_type="esmc",
            hidden_size=20,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=40,
            vocab_size=64,
        ),
    )
    settings.update(overrides)
    return ReferenceConfig(**settings)


SEQUENCES = ["MKTAYIAKQRW", "GSCLPH"]
# the real featurisation's atomic numbers (S = 16) and name characters need the full one-hot widths; a window of
# 16 atoms (radius 8) against ~90 atoms a protein
FEATURE_OVERRIDES = dict(max_atomic_number=128, char_vocab_size=64, sliding_window=16)


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter randomized, and every floating buffer (the Fourier frequencies and phases) redrawn."""
    generator = torch.Generator().manual_seed(seed)
    randomize_(module, generator)
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(torch.randn(buffer.shape, generator=generator))
    return module.eval()


def featurised(config, sequences: list[str] = SEQUENCES) -> tuple[object, AtomInputs, torch.Tensor]:
    """The reference's ``EsmFold2AtomInputs`` and ours for ``sequences`` padded into one batch, and the token mask."""
    features = [protein_utils.prepare_protein_features(s) for s in sequences]
    num_atoms = max(f["ref_pos"].shape[1] for f in features)
    num_tokens = max(len(s) for s in sequences)

    def stack(name: str, length: int) -> torch.Tensor:
        return torch.cat([F.pad(f[name], (0, 0) * (f[name].dim() - 2) + (0, length - f[name].shape[1])) for f in
                          features])  # fmt: skip

    atom_mask = stack("atom_attention_mask", num_atoms)
    element = F.one_hot(stack("ref_element", num_atoms), config.max_atomic_number).float()
    chars = F.one_hot(stack("ref_atom_name_chars", num_atoms), config.char_vocab_size).float()
    fields = dict(
        ref_pos=stack("ref_pos", num_atoms),
        ref_charge=stack("ref_charge", num_atoms),
        atom_attention_mask=atom_mask,
        ref_element=element * atom_mask[..., None],
        ref_atom_name_chars=chars * atom_mask[..., None, None],
        ref_space_uid=stack("ref_space_uid", num_atoms),
        atom_to_token=stack("atom_to_token", num_atoms) * atom_mask.long(),
    )
    return reference.EsmFold2AtomInputs(**fields), AtomInputs(**fields), stack("attention_mask", num_tokens)


# constants, not weights: ESM C's rotary frequencies (ours computes its own) and the confidence head's distance bin
# edges (redrawn, they would not be sorted)
# buffers that are constants, not weights: ESM C's rotary frequencies (ours computes its own) and the confidence
# head's distance bin edges (redrawn, they would not be sorted); the Fourier buffers are redrawn
KEPT_BUFFERS = ("esmc.rotary_emb.", "confidence_head.boundaries")
MSA_ONLY = ("has_deletion", "deletion_value")  # the MSA encoder's inputs; ESMFold2-Fast has none


def randomized_reference(config, seed: int = 0) -> torch.nn.Module:
    """A transformers ``EsmFold2Model`` of ``config`` (sdpa attention), `randomized` but for ``KEPT_BUFFERS``."""
    config._attn_implementation = "sdpa"
    model = reference.EsmFold2Model(config)
    kept = {name: buffer.clone() for name, buffer in model.named_buffers() if name.startswith(KEPT_BUFFERS)}
    randomized(model, seed=seed)
    for name, buffer in model.named_buffers():
        if name in kept:
            buffer.copy_(kept[name])
    return model


def complex_features(sequences: list[str]) -> dict[str, torch.Tensor]:
    """Chains featurised one by one and concatenated: tokens renumbered, atoms and their tokens and groups offset,
    one asym id and entity per chain, residue numbers per chain; the atom padding moved to the end."""
    chains = [protein_utils.prepare_protein_features(s) for s in sequences]
    tokens_before, merged = 0, {}
    for chain_index, chain in enumerate(chains):
        atom_mask = chain["atom_attention_mask"][0]
        atoms = {k: chain[k][:, atom_mask] for k in ("ref_pos", "ref_element", "ref_charge", "ref_atom_name_chars")}
        atoms["atom_attention_mask"] = chain["atom_attention_mask"][:, atom_mask]
        atoms["atom_to_token"] = chain["atom_to_token"][:, atom_mask] + tokens_before
        atoms["ref_space_uid"] = chain["ref_space_uid"][:, atom_mask] + tokens_before
        atoms_before = sum(int(c["atom_attention_mask"].sum()) for c in chains[:chain_index])
        tokens = {k: chain[k] for k in ("residue_index", "sym_id", "mol_type", "res_type", "input_ids")}
        tokens |= {k: chain[k] for k in ("attention_mask", "deletion_mean")}
        tokens["token_index"] = chain["token_index"] + tokens_before
        tokens["asym_id"] = chain["asym_id"] + chain_index
        tokens["entity_id"] = chain["entity_id"] + chain_index
        tokens["distogram_atom_idx"] = chain["distogram_atom_idx"] + atoms_before
        tokens["msa"] = chain["msa"]
        tokens["msa_attention_mask"] = chain["msa_attention_mask"]
        for name, value in (atoms | tokens).items():
            merged.setdefault(name, []).append(value)
        tokens_before += chain["attention_mask"].shape[1]
    features = {name: torch.cat(parts, dim=-1 if name.startswith("msa") else 1) for name, parts in merged.items()}
    num_atoms = features["ref_pos"].shape[1]
    pad = -num_atoms % 32
    for name in ("ref_pos", "ref_element", "ref_charge", "ref_atom_name_chars", "atom_attention_mask",
                 "atom_to_token", "ref_space_uid"):  # fmt: skip
        value = features[name]
        features[name] = torch.cat([value, value.new_zeros(1, pad, *value.shape[2:])], dim=1)
    features["token_bonds"] = torch.zeros(1, tokens_before, tokens_before, 1)
    return features
