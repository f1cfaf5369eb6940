"""The whole ESMFold2: features -> input embedder; ESM C states -> LM encoder; the trunk's loops; diffusion sampling;
confidence on every sample (transformers' ``EsmFold2Model.forward`` + ``EsmFold2FoldingMixin.fold``, protein only).

    atoms, single inputs, z_init, relpos, bonds = input_embedder(features)
    lm = esmc_hidden_states(esmc, input_ids, ...)                       (unless lm_hidden_states are given)
    z, distogram = PairTrunk(z_init, mask, lm, num_loops)               once for all samples
    coords = sample_structure(structure_head, prepare(..., S), ...)     S samples per item
    confidence = confidence_head(..., coords, S)

The random draws (trunk initial state, LM dropout per loop, the sampler's noise and rotations) come from torch's
global generator in the reference's order, so after the same ``torch.manual_seed`` the coordinates are the
reference's ``fold`` coordinates.

State dict: ``ESMFold2`` is a ``PairTrunk`` (its submodules keep the reference's top-level names) plus
``input_embedder``, ``structure_head``, ``confidence_head`` and ``esmc``. Every key equals the reference
``EsmFold2Model``'s except ``esmc.*``, which holds our ``lm.esmc.ESMC`` names
(``weights.esmfold2_format.esmfold2_state_from_transformers`` renames a reference state dict). The MSA encoder is
not part of it: a config with ``msa_encoder.enabled`` is refused.

Shapes: B batch, S samples, N tokens, A atoms; sample-major tensors [B*S, ...] are item-major (sample s of item b
at b*S + s), as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from esmfold_lite.esmfold2.confidence_head import ConfidenceHead, ConfidenceOutput
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.diffusion_module import DiffusionModule
from esmfold_lite.esmfold2.esmc_states import esmc_hidden_states, refuse_unsupported
from esmfold_lite.esmfold2.input_embedder import InputEmbedder
from esmfold_lite.esmfold2.input_features import encode_atoms, msa_profile, residue_one_hot
from esmfold_lite.esmfold2.sampler import sample_structure
from esmfold_lite.esmfold2.trunk import PairTrunk
from esmfold_lite.lm.esmc import ESMC, ESMCConfig


@dataclass
class FoldOutput:
    """distogram_logits: [B, N, N, bins]; sample_atom_coords: [B*S, A, 3] Å; confidence: pLDDT (0-100), PAE, PDE,
    pTM, ipTM and per-chain-pair ipTM per sample ([B*S, ...]); ranking: [B, S] sample indices, best pTM first (the
    reference's ``protein_utils._rank_samples`` picks ``ranking[0, 0]``)."""

    distogram_logits: Tensor
    sample_atom_coords: Tensor
    confidence: ConfidenceOutput
    ranking: Tensor


def rank_samples(ptm: Tensor, num_samples: int) -> Tensor:
    """ptm: [B*S] -> [B, S] sample indices by decreasing pTM, the first of equal scores first (as ``argmax``)."""
    return torch.argsort(ptm.float().view(-1, num_samples), dim=1, descending=True, stable=True)


class ESMFold2(PairTrunk):
    """ESMFold2 for protein chains. ``forward`` = the reference's ``fold`` on its featurised inputs."""

    def __init__(self, config: EsmFold2Config, esmc_config: ESMCConfig) -> None:
        if config.msa_encoder.enabled:
            raise ValueError("this ESMFold2 has an MSA encoder, which is not supported: only single-sequence models")
        super().__init__(config)
        self.input_embedder = InputEmbedder(config)
        self.esmc = ESMC(esmc_config)
        self.structure_head = DiffusionModule(config)
        self.confidence_head = ConfidenceHead(config)

    @torch.no_grad()
    def forward(
        self,
        token_index: Tensor,
        residue_index: Tensor,
        asym_id: Tensor,
        sym_id: Tensor,
        entity_id: Tensor,
        mol_type: Tensor,
        res_type: Tensor,
        token_bonds: Tensor,
        attention_mask: Tensor,
        ref_pos: Tensor,
        ref_element: Tensor,
        ref_charge: Tensor,
        ref_atom_name_chars: Tensor,
        ref_space_uid: Tensor,
        atom_attention_mask: Tensor,
        atom_to_token: Tensor,
        distogram_atom_idx: Tensor,
        input_ids: Tensor | None = None,
        lm_hidden_states: Tensor | None = None,
        msa: Tensor | None = None,
        msa_attention_mask: Tensor | None = None,
        deletion_mean: Tensor | None = None,
        num_loops: int | None = None,
        num_samples: int | None = None,
        num_steps: int | None = None,
    ) -> FoldOutput:
        """Fold featurised proteins (``protein_utils.prepare_protein_features``' names and shapes).

        Args:
            token_index, residue_index, asym_id, sym_id, entity_id, mol_type, res_type: [B, N] long.
            token_bonds: [B, N, N, 1]; attention_mask: [B, N] (right padding).
            ref_pos: [B, A, 3]; ref_element, ref_charge, ref_space_uid, atom_to_token: [B, A];
            ref_atom_name_chars: [B, A, max_chars]; atom_attention_mask: [B, A] bool.
            distogram_atom_idx: [B, N] each token's representative atom (Cβ, Cα for glycine).
            input_ids: [B, N] ESM C ids, run through ``esmc`` unless ``lm_hidden_states`` [B, N, layers + 1, D] are
                given (neither: no LM term).
            msa, msa_attention_mask: [B, M, N] for the profile only (None: the residue types); deletion_mean: [B, N].
            num_loops: trunk loops (``config.num_loops``); num_samples: S (``structure_head.num_diffusion_samples``);
            num_steps: sampling steps (``structure_head.inference_num_steps``).

        Raises:
            ValueError: a row without tokens, a non-protein token (DNA, RNA, ligand) or a residue of several tokens.
        """
        refuse_unsupported(asym_id, residue_index, mol_type, attention_mask.bool())
        head = self.config.structure_head
        num_samples = head.num_diffusion_samples if num_samples is None else num_samples
        atoms = encode_atoms(
            self.config, ref_pos, ref_charge, atom_attention_mask, ref_element, ref_atom_name_chars, ref_space_uid,
            atom_to_token,
        )  # fmt: skip
        res_one_hot = residue_one_hot(res_type, attention_mask, self.config.num_res_types)
        profile = None if msa is None else msa_profile(msa, msa_attention_mask, self.config.num_res_types)
        embedded = self.input_embedder(
            atoms, res_one_hot, token_index, residue_index, asym_id, sym_id, entity_id, token_bonds, profile,
            deletion_mean,
        )  # fmt: skip
        if lm_hidden_states is None and input_ids is not None:
            lm_hidden_states = esmc_hidden_states(
                self.esmc, input_ids, asym_id, residue_index, mol_type, attention_mask
            )
        trunk = super().forward(embedded.initial_pair_states, attention_mask, lm_hidden_states, num_loops)

        token_mask = attention_mask.bool()
        conditioning = self.structure_head.prepare(
            atoms, trunk.pair_states, embedded.relative_position_encoding, embedded.single_inputs, token_mask,
            num_samples,
        )  # fmt: skip
        coords = sample_structure(self.structure_head, conditioning, conditioning.atom_mask, head, num_steps)
        confidence = self.confidence_head(
            embedded.single_inputs, trunk.pair_states, coords, distogram_atom_idx, token_mask, atoms.atom_to_token,
            atoms.atom_attention_mask, asym_id, embedded.relative_position_encoding, embedded.token_bonds_encoding,
            num_samples,
        )  # fmt: skip
        return FoldOutput(trunk.distogram_logits, coords, confidence, rank_samples(confidence.ptm, num_samples))
