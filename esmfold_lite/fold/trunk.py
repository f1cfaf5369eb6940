"""ESMFold folding trunk: relative positions, a stack of triangular self-attention blocks, recycling, and the
structure module.

One trunk pass adds the relative-position embedding to the pair state and runs every block; the structure module
then turns the (projected) states into atoms. Recycling feeds the previous pass's sequence and pair states
(layer-normalised) and a distogram of its predicted pseudo-Cβ atoms back into the next pass. Only the last pass
is differentiated. The end of every block is told to a progress listener, if one is installed
(``esmfold_lite.fold_progress``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from esmfold_lite.fold.chunking import ChunkPlan, RowMap, chunk_apply, reuse_buffers
from esmfold_lite.fold.config import TrunkConfig
from esmfold_lite.fold.structure_module import StructureModule
from esmfold_lite.fold.trunk_block import TriangularSelfAttentionBlock
from esmfold_lite.fold_progress import TRUNK_BLOCK, step_done

RECYCLE_BINS = 15
RECYCLE_MIN_BIN = 3.375  # Å, first Cβ–Cβ distance boundary (AlphaFold2's recycling distogram)
RECYCLE_MAX_BIN = 21.375  # Å, last boundary


class RelativePosition(nn.Module):
    """Pair embedding of the clipped residue-index offset r_j − r_i ∈ [−bins, bins]; index 0 marks padded pairs."""

    def __init__(self, bins: int, c_z: int):
        super().__init__()
        self.bins = bins
        self.embedding = nn.Embedding(2 * bins + 2, c_z)

    def forward(self, residue_index: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """residue_index: (B, L) long; mask: (B, L), 1 = residue. Returns (B, L, L, c_z)."""
        return self.between(residue_index, residue_index, mask, mask)

    def between(
        self,
        index_i: torch.Tensor,
        index_j: torch.Tensor,
        mask_i: torch.Tensor | None = None,
        mask_j: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows i against columns j: index_i (B, I), index_j (B, J) long; masks alike. Returns (B, I, J, c_z)."""
        offset = index_j[:, None, :] - index_i[:, :, None]
        index = offset.clamp(-self.bins, self.bins) + self.bins + 1
        if mask_i is not None:
            index = index.masked_fill(mask_j[:, None, :] * mask_i[:, :, None] == 0, 0)
        return self.embedding(index)


def pseudo_beta_distogram(backbone: torch.Tensor, num_bins: int = RECYCLE_BINS) -> torch.Tensor:
    """Bin the pairwise distances of Cβ atoms placed ideally from N, Cα, C.

    Args:
        backbone: (B, L, 3, 3) coordinates of N, Cα, C (the first three atom14 slots).
        num_bins: bins; boundaries are ``num_bins - 1`` points evenly spaced from 3.375 Å to 21.375 Å.

    Returns:
        (B, L, L) long bin index in [0, num_bins).
    """
    n, ca, c = backbone.unbind(dim=-2)
    b = ca - n
    c = c - ca
    a = torch.cross(b, c, dim=-1)
    cb = -0.58273431 * a + 0.56802827 * b - 0.54067466 * c + ca
    boundaries = torch.linspace(RECYCLE_MIN_BIN, RECYCLE_MAX_BIN, num_bins - 1, device=backbone.device) ** 2
    squared = (cb[..., None, :, :] - cb[..., :, None, :]).pow(2).sum(dim=-1)
    return torch.bucketize(squared, boundaries.to(squared.dtype))  # the number of boundaries below each value


class FoldingTrunk(nn.Module):
    """ESMFold trunk. Attributes: ``pairwise_positional_embedding``, ``blocks``, ``recycle_s_norm``,
    ``recycle_z_norm``, ``recycle_disto``, ``structure_module``, ``trunk2sm_s``, ``trunk2sm_z``; ``chunk_size``
    (from the config) is the default for ``forward``."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        self.cfg = cfg
        c_s, c_z = cfg.sequence_state_dim, cfg.pairwise_state_dim
        self.pairwise_positional_embedding = RelativePosition(cfg.position_bins, c_z)
        self.blocks = nn.ModuleList(
            TriangularSelfAttentionBlock(c_s, c_z, cfg.sequence_head_width, cfg.pairwise_head_width, cfg.dropout)
            for _ in range(cfg.num_blocks)
        )
        self.recycle_s_norm = nn.LayerNorm(c_s)
        self.recycle_z_norm = nn.LayerNorm(c_z)
        self.recycle_disto = nn.Embedding(RECYCLE_BINS, c_z)
        with torch.no_grad():
            self.recycle_disto.weight[0].zero_()
        self.structure_module = StructureModule(cfg.structure_module)
        self.trunk2sm_s = nn.Linear(c_s, cfg.structure_module.c_s)
        self.trunk2sm_z = nn.Linear(c_z, cfg.structure_module.c_z)
        self.chunk_size = cfg.chunk_size

    def forward(
        self,
        seq_feats: torch.Tensor,
        pair_feats: torch.Tensor,
        true_aa: torch.Tensor,
        residx: torch.Tensor,
        mask: torch.Tensor,
        no_recycles: int | None = None,
        chunk_size: int | ChunkPlan | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fold.

        Args:
            seq_feats: (B, L, c_s) initial sequence state s_s_0.
            pair_feats: (B, L, L, c_z) initial pair state s_z_0.
            true_aa: (B, L) long residue types (AF2 order, 20 = X), for the structure module's side chains.
            residx: (B, L) long residue index (gaps/offsets separate chains).
            mask: (B, L) 1 = residue, 0 = padding.
            no_recycles: recycles after the first pass: N runs N + 1 trunk passes; None runs ``cfg.max_recycles``
                passes (the original's convention: esmfold_v1's None equals N = 3).
            chunk_size: rows per chunk in the blocks' O(L²)/O(L³) steps and the structure module's IPA (an integer
                also picks the triangle multiplication's row blocks, ``ChunkPlan.of``), or a whole ``ChunkPlan``;
                None uses ``self.chunk_size`` (``cfg.chunk_size``; None there means unchunked). Results do not
                depend on it. With autograd off each pass keeps one pair state, updated in place.

        Returns:
            The structure module's output of the last pass (``positions`` (n_sm_blocks, B, L, 14, 3), ``frames``,
            ``angles``, ``single``, ...) plus ``s_s`` (B, L, c_s) and ``s_z`` (B, L, L, c_z), the trunk's final
            states.
        """
        if no_recycles is None:
            passes = self.cfg.max_recycles
        elif no_recycles < 0:
            raise ValueError(f"no_recycles must be >= 0 (or None for the checkpoint's default), got {no_recycles}")
        else:
            passes = no_recycles + 1
        if passes < 1:
            raise ValueError(f"the trunk needs at least one pass; cfg.max_recycles is {self.cfg.max_recycles}")
        plan = ChunkPlan.of(self.chunk_size if chunk_size is None else chunk_size, seq_feats.shape[1])
        mask = mask.to(seq_feats.dtype)

        recycle_s = torch.zeros_like(seq_feats)
        recycle_z = pair_feats.new_zeros(()).expand(pair_feats.shape)  # no memory: a broadcast zero
        recycle_bins = torch.zeros(pair_feats.shape[:-1], dtype=torch.long, device=pair_feats.device)
        for index in range(passes):
            last = index == passes - 1
            with contextlib.nullcontext() if last else torch.no_grad():
                recycle_s = self.recycle_s_norm(recycle_s.detach())
                s_s = seq_feats + recycle_s
                s_z = self._pair_input(pair_feats, recycle_z.detach(), recycle_bins, residx, mask, plan.rows)
                recycle_z = recycle_bins = None  # the pair state now lives on in s_z alone
                with reuse_buffers():  # the blocks' scratch memory, freed before the structure module
                    for number, block in enumerate(self.blocks, start=1):
                        s_s, s_z = block(s_s, s_z, mask, plan.rows, plan.pair_blocks)
                        step_done(TRUNK_BLOCK, number, len(self.blocks), index + 1, passes)

                structure = self.structure_module(
                    {"single": self.trunk2sm_s(s_s), "pair": RowMap(self.trunk2sm_z, s_z, dim=1)},
                    true_aa,
                    mask,
                    plan.rows,
                    lazy_pair=plan.lean,
                )
                if not last:
                    recycle_s, recycle_z = s_s, s_z
                    recycle_bins = pseudo_beta_distogram(structure["positions"][-1][:, :, :3])

        structure["s_s"] = s_s
        structure["s_z"] = s_z
        return structure

    def _pair_input(
        self,
        pair_feats: torch.Tensor,
        recycle_z: torch.Tensor,
        recycle_bins: torch.Tensor,
        residx: torch.Tensor,
        mask: torch.Tensor,
        chunk_size: int | None,
    ) -> torch.Tensor:
        """A pass's first pair state s_z_0 + (LN(z_prev) + disto(bins_prev)) + relpos, ``chunk_size`` rows at a time.

        pair_feats, recycle_z: (B, L, L, c_z) (either may be a broadcast view); recycle_bins: (B, L, L) long;
        residx, mask: (B, L). With autograd off and a real ``recycle_z`` (the previous pass's pair state, owned by
        the trunk), the result is written over it.
        """

        def rows(pair_rows, recycle_rows, bins_rows, residx_rows, mask_rows):
            z = self.recycle_z_norm(recycle_rows) + self.recycle_disto(bins_rows)
            z = pair_rows + z
            return z + self.pairwise_positional_embedding.between(residx_rows, residx, mask_rows, mask)

        owned = not torch.is_grad_enabled() and recycle_z.stride(-2) != 0
        return chunk_apply(
            rows,
            (pair_feats, recycle_z, recycle_bins, residx, mask),
            (1,) * 5,
            chunk_size,
            out_dim=1,
            out=recycle_z if owned else None,
        )
