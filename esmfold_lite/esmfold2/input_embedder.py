"""ESMFold2's input embedder (transformers' ``EsmFold2InputEmbedder``): the atom encoder over the reference
conformers, averaged per token, joined with the token features into the single inputs; those projected to pairs
plus the relative-position and token-bond encodings give the trunk's initial pair representation.

Shapes: B batch, N tokens, A atoms; c_i = ``single_inputs_size`` (atom encoder output + 2 * num_res_types + 1),
c_z = ``pairwise_hidden_size``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from esmfold_lite.esmfold2.atom_transformer import AtomEncoder, AtomInputs
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.relative_position import RelativePositionEncoding


class EmbeddedInputs(NamedTuple):
    """The embedder's outputs. single_inputs: [B, N, c_i]; initial_pair_states: [B, N, N, c_z], which already
    holds relative_position_encoding and token_bonds_encoding (each [B, N, N, c_z]); those two are returned as well
    because the denoiser's conditioning and the confidence head read them again."""

    single_inputs: Tensor
    initial_pair_states: Tensor
    relative_position_encoding: Tensor
    token_bonds_encoding: Tensor


class InputEmbedder(nn.Module):
    """Atom encoder (the embedding is both its stream and its conditioning: no coordinates exist yet) -> per-token
    mean, concatenated with the residue-type one-hot, the profile and the deletion mean -> single inputs; the pair
    representation is ``pair_init_1(s)_i + pair_init_2(s)_j + relpos_ij + token_bonds(bonds_ij)``."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        self.atom_encoder = AtomEncoder(config, config.atom_encoder)
        self.pair_init_1 = nn.Linear(config.single_inputs_size, config.pairwise_hidden_size, bias=False)
        self.pair_init_2 = nn.Linear(config.single_inputs_size, config.pairwise_hidden_size, bias=False)
        self.rel_pos = RelativePositionEncoding(config)
        self.token_bonds = nn.Linear(1, config.pairwise_hidden_size, bias=False)

    def forward(
        self,
        atoms: AtomInputs,
        res_type_one_hot: Tensor,
        token_index: Tensor,
        residue_index: Tensor,
        asym_id: Tensor,
        sym_id: Tensor,
        entity_id: Tensor,
        token_bonds: Tensor,
        profile: Tensor | None = None,
        deletion_mean: Tensor | None = None,
    ) -> EmbeddedInputs:
        """atoms: the encoded conformer features (``input_features.encode_atoms``); res_type_one_hot: [B, N,
        num_res_types] (``input_features.residue_one_hot``); token_index, residue_index, asym_id, sym_id,
        entity_id: [B, N] long; token_bonds: [B, N, N, 1]; profile: [B, N, num_res_types] (None: the residue
        types, as without an MSA); deletion_mean: [B, N] (None: zeros). N is res_type_one_hot's length."""
        num_tokens = res_type_one_hot.shape[1]
        embeds, rotary = self.atom_encoder.embed_atoms(atoms)
        atom_encoding, _ = self.atom_encoder(
            embeds, embeds, atoms.atom_attention_mask, rotary, atoms.atom_to_token, num_tokens
        )
        dtype = atom_encoding.dtype
        if profile is None:
            profile = res_type_one_hot
        if deletion_mean is None:
            deletion_mean = torch.zeros(res_type_one_hot.shape[:2], device=res_type_one_hot.device)
        single_inputs = torch.cat(
            [atom_encoding, res_type_one_hot.to(dtype), profile.to(dtype), deletion_mean[..., None].to(dtype)], dim=-1
        )
        pair = self.pair_init_1(single_inputs)[:, :, None] + self.pair_init_2(single_inputs)[:, None, :]
        relative_position = self.rel_pos(residue_index, asym_id, sym_id, entity_id, token_index)
        pair += relative_position
        bonds = self.token_bonds(token_bonds.to(self.token_bonds.weight.dtype))
        pair += bonds
        return EmbeddedInputs(single_inputs, pair, relative_position, bonds)
