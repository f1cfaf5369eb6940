"""ESMFold2's relative-position encoding (AF3's, Algorithm 3): a pair feature from the clipped residue, token and
chain (sym_id) offsets of two tokens and whether they belong to the same entity.

The reference one-hot encodes the four features into ``[B, N, N, num_features]`` and applies a bias-free linear. A
one-hot times a matrix is a sum of the matrix's selected columns, so here each feature's bin picks its rows of the
transposed weight (``F.embedding``) and the picks are added in place: the same encoding with no one-hot tensor, at a
peak of two ``[B, N, N, c_z]`` tensors (the result and one pick).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esmfold_lite.esmfold2.config import EsmFold2Config


def relative_bin(offset: Tensor, num_bins: int, in_context: Tensor) -> Tensor:
    """The bin of a relative index offset among ``2 * num_bins + 2``: the offset clipped to ``[-num_bins,
    num_bins]`` (bins ``0 .. 2 * num_bins``), or the last, "out of context" bin where ``in_context`` is False.

    offset: [B, N, N] long; in_context: [B, N, N] bool. Returns [B, N, N] long."""
    binned = torch.clamp(offset + num_bins, 0, 2 * num_bins)
    return torch.where(in_context, binned, 2 * num_bins + 1)


def pairwise(index: Tensor, compare: Callable[[Tensor, Tensor], Tensor] = torch.sub) -> Tensor:
    """``compare(index_i, index_j)`` for every token pair: index [B, N] -> [B, N, N]."""
    return compare(index[:, :, None], index[:, None, :])


class RelativePositionEncoding(nn.Module):
    """transformers' ``EsmFold2RelativePositionEncoding``. ``embed.weight`` is ``[c_z, num_features]`` over the
    features, in this order: residue offset (``2 * num_relative_residx_bins + 2``, out of context across chains),
    token offset (as many, out of context across chains or residues), same entity (1), chain offset
    (``2 * num_relative_chain_bins + 2``, out of context within a chain)."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        self.residue_bins = config.num_relative_residx_bins
        self.chain_bins = config.num_relative_chain_bins
        num_features = 2 * (2 * self.residue_bins + 2) + 1 + (2 * self.chain_bins + 2)
        self.embed = nn.Linear(num_features, config.pairwise_hidden_size, bias=False)

    def forward(
        self, residue_index: Tensor, asym_id: Tensor, sym_id: Tensor, entity_id: Tensor, token_index: Tensor
    ) -> Tensor:
        """Each input [B, N] long (residue index within its chain, chain, copy of its entity, entity, token index in
        the complex). Returns the encoding [B, N, N, c_z]."""
        same_chain = pairwise(asym_id, torch.eq)
        num_offsets = 2 * self.residue_bins + 2
        residue_rows, token_rows, entity_row, chain_rows = self.embed.weight.t().split(
            [num_offsets, num_offsets, 1, 2 * self.chain_bins + 2]
        )
        # the chain offset and same entity as one pick: row c (other entity) or c + num_chain_offsets (same)
        chain_entity_rows = torch.cat([chain_rows, chain_rows + entity_row])
        chain_entity = relative_bin(pairwise(sym_id), self.chain_bins, ~same_chain)
        chain_entity += pairwise(entity_id, torch.eq) * chain_rows.shape[0]

        encoding = F.embedding(relative_bin(pairwise(residue_index), self.residue_bins, same_chain), residue_rows)
        token_in_context = same_chain & pairwise(residue_index, torch.eq)
        encoding += F.embedding(relative_bin(pairwise(token_index), self.residue_bins, token_in_context), token_rows)
        encoding += F.embedding(chain_entity, chain_entity_rows)
        return encoding
