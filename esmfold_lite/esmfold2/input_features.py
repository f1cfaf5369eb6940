"""The one-hot encoding ESMFold2 applies to its raw features before the input embedder (transformers'
``EsmFold2Model._prepare_features``): residue types, the MSA profile, and the reference-conformer atom features
(element and atom-name characters), every padding position zeroed (the layers that read them have no bias).

Shapes: B batch, N tokens, M MSA rows, A atoms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from esmfold_lite.esmfold2.atom_transformer import AtomInputs
from esmfold_lite.esmfold2.config import EsmFold2Config


def residue_one_hot(res_type: Tensor, attention_mask: Tensor, num_res_types: int) -> Tensor:
    """res_type: [B, N] long (or an already encoded [B, N, num_res_types], taken as it is); attention_mask: [B, N].
    Returns [B, N, num_res_types] fp32, zero at padding tokens."""
    if res_type.dim() == 3:
        return res_type.float()
    return F.one_hot(res_type, num_res_types).float() * attention_mask[..., None].float()


def msa_profile(msa: Tensor, msa_attention_mask: Tensor | None, num_res_types: int) -> Tensor:
    """The per-column residue-type frequencies of an MSA. msa: [B, M, N] long; msa_attention_mask: [B, M, N] (None:
    every row counts). Returns [B, N, num_res_types] fp32 (zero where a column has no valid row)."""
    one_hot = F.one_hot(msa, num_res_types).float()
    if msa_attention_mask is None:
        return one_hot.mean(dim=1)
    valid = msa_attention_mask.float()
    return (one_hot * valid[..., None]).sum(dim=1) / valid.sum(dim=1).clamp(min=1)[..., None]


def encode_atoms(
    config: EsmFold2Config,
    ref_pos: Tensor,
    ref_charge: Tensor,
    atom_attention_mask: Tensor,
    ref_element: Tensor,
    ref_atom_name_chars: Tensor,
    ref_space_uid: Tensor,
    atom_to_token: Tensor,
) -> AtomInputs:
    """The raw conformer features (``prepare_protein_features``'s names) as the atom stacks read them.

    ref_pos: [B, A, 3]; ref_charge, ref_space_uid: [B, A]; atom_attention_mask: [B, A] bool; ref_element: [B, A]
    atomic numbers < ``max_atomic_number``; ref_atom_name_chars: [B, A, max_chars] codes < ``char_vocab_size``;
    atom_to_token: [B, A] long. The element and name characters become one-hots, zero at padding atoms, and
    atom_to_token is 0 there."""
    mask = atom_attention_mask.float()
    element = F.one_hot(ref_element, config.max_atomic_number).float() * mask[..., None]
    name_chars = F.one_hot(ref_atom_name_chars, config.char_vocab_size).float() * mask[..., None, None]
    return AtomInputs(
        ref_pos=ref_pos,
        ref_charge=ref_charge,
        atom_attention_mask=atom_attention_mask,
        ref_element=element,
        ref_atom_name_chars=name_chars,
        ref_space_uid=ref_space_uid,
        atom_to_token=atom_to_token * atom_attention_mask.long(),
    )
