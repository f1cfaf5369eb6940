"""ESMFold2's confidence numbers from its head's logits: pLDDT per atom, token and complex, interface pLDDT, PAE, PDE,
pTM, ipTM and the per-chain-pair ipTM.

The arithmetic follows transformers' ``EsmFold2ConfidenceHead``; the pieces that are ESMFold's own math (the expected
value over equal bins, the TM-score term with its d0(N)) come from ``fold/heads.py``. pLDDT is 0–100 here, as
everywhere in esmfold_lite (the reference reports 0–1). Proteins only: the reference's ligand weighting of the
interface pLDDT never applies, so it is left out.

Shapes: B' = batch × samples, A atoms, N tokens (residues), K chains (``max(asym_id) + 1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from esmfold_lite.fold.heads import categorical_mean, equal_bin_centres, expected_tm_term

ALIGNED_ERROR_MAX = 32.0  # Å: the PAE and PDE bins are equal bins of [0, 32]
INTERFACE_CONTACT = 8.0  # Å: representative atoms closer than this, on different chains, make an interface


def intra_token_index(atom_to_token: Tensor) -> Tensor:
    """Each atom's index within its token (a token's atoms are contiguous), (B', A) -> (B', A)."""
    position = torch.arange(atom_to_token.shape[-1], device=atom_to_token.device).expand_as(atom_to_token)
    continues = F.pad(atom_to_token[:, 1:] == atom_to_token[:, :-1], (1, 0), value=False)
    token_start = position.masked_fill(continues, 0).cummax(dim=-1).values
    return position - token_start


def token_plddt(atom_values: Tensor, atom_to_token: Tensor, atom_mask: Tensor, num_tokens: int) -> Tensor:
    """Mean of (B', A) per-atom values over each token's existing atoms -> (B', N); 0 for a token without atoms."""
    weights = atom_mask.to(atom_values.dtype)
    total = atom_values.new_zeros(atom_values.shape[0], num_tokens)
    count = torch.zeros_like(total)
    total.scatter_add_(1, atom_to_token, atom_values * weights)
    count.scatter_add_(1, atom_to_token, weights)
    return total / count.clamp(min=1e-6)


def weighted_mean(values: Tensor, weights: Tensor, eps: float) -> Tensor:
    """sum(values * weights) / (sum(weights) + eps) over the last dimension."""
    return (values * weights).sum(dim=-1) / (weights.sum(dim=-1) + eps)


def interface_tokens(rep_distances: Tensor, asym_id: Tensor) -> Tensor:
    """1 for tokens whose representative atom is within ``INTERFACE_CONTACT`` of one on another chain, else 0.

    As the reference, every token (padding included) counts as a partner.

    Args:
        rep_distances: (B', N, N) distances between the tokens' representative atoms, Å.
        asym_id: (B', N) chain index.
    Returns:
        (B', N) float.
    """
    inter_chain = asym_id[:, :, None] != asym_id[:, None, :]
    return ((rep_distances < INTERFACE_CONTACT) & inter_chain).any(dim=-1).to(rep_distances.dtype)


def expected_distance_error(logits: Tensor) -> Tensor:
    """PAE or PDE (Å): the expectation of (..., bins) logits over equal bins of [0, 32] -> (...)."""
    return categorical_mean(logits, 0.0, ALIGNED_ERROR_MAX)


def tm_terms(pae_logits: Tensor, token_mask: Tensor) -> Tensor:
    """The expected TM-score term of every (alignment frame i, residue j) pair, d0 from each sequence's length.

    Args:
        pae_logits: (B', N, N, bins).
        token_mask: (B', N) bool, True for real tokens.
    Returns:
        (B', N, N) fp32.
    """
    probs = F.softmax(pae_logits, dim=-1, dtype=torch.float32)
    centres = equal_bin_centres(0.0, ALIGNED_ERROR_MAX, pae_logits.shape[-1], device=probs.device)
    return expected_tm_term(probs, centres, token_mask.float().sum(dim=-1))


def best_frame(tm: Tensor, pair_mask: Tensor, eps: float) -> Tensor:
    """max_i of the ``pair_mask``-weighted mean over j of (B', N, N) TM terms -> (B',) (a row without pairs: 0)."""
    return weighted_mean(tm, pair_mask, eps).amax(dim=-1)


def ptm_iptm(tm: Tensor, token_mask: Tensor, asym_id: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """pTM, ipTM and the per-chain-pair ipTM from the (B', N, N) TM terms of ``tm_terms``.

    pTM is the best frame's mean over all residues, ipTM over the residues of other chains (0 for one chain).
    ``pair[b, c, d]`` is the best frame i on chain d of the mean over the residues j of chain c (0 where either chain
    is absent), so ipTM is the largest off-diagonal entry.

    Args:
        tm: (B', N, N).
        token_mask: (B', N) bool.
        asym_id: (B', N) chain index 0..K-1.
    Returns:
        ptm (B',), iptm (B',), pair (B', K, K).
    """
    mask = token_mask.to(tm.dtype)
    pair_mask = mask[:, :, None] * mask[:, None, :]
    inter_chain = (asym_id[:, :, None] != asym_id[:, None, :]).to(tm.dtype) * pair_mask
    ptm = best_frame(tm, pair_mask, eps)
    iptm = best_frame(tm, inter_chain, eps)

    num_chains = int(asym_id.max()) + 1 if asym_id.numel() else 1
    on_chain = F.one_hot(asym_id, num_chains).to(tm.dtype) * mask[:, :, None]  # (B', N, K)
    chain_mean = (tm @ on_chain) / (on_chain.sum(dim=1)[:, None, :] + eps)  # (B', N frames, K residue chains)
    frames_on = on_chain[:, :, None, :].bool()  # (B', N, 1, K frame chains)
    pair = chain_mean[:, :, :, None].masked_fill(~frames_on, float("-inf")).amax(dim=1)
    return ptm, iptm, pair.clamp(min=0.0)
