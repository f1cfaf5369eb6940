"""Triangle self-attention around the starting node (AlphaFold2 Algorithm 13) and the ending node (Algorithm 14).

Starting node: for every row i of the pair representation, edge (i, j) attends to edges (i, k), with a bias b_jk
projected from the pair representation itself. The ending node is the same computation on the transposed pair
representation (attention along columns), transposed back.

Rows are independent, so the attention runs ``chunk_size`` rows at a time; per chunk at most
(chunk, H, L, L) logits exist. When the rows of a chunk share one mask row (always, without padding), they share
one (H, J, K) bias too, which the attention kernel broadcasts instead of materialising per row.
"""

from __future__ import annotations

import torch
from torch import nn

from esmfold_lite.fold.attention import GatedAttention
from esmfold_lite.fold.chunking import chunk_apply


class TriangleAttention(nn.Module):
    """Args: c_z: pair channels. c_hidden: per-head width. no_heads: H. starting: Algorithm 13 if True, else 14.
    inf: magnitude of the padding mask bias (1e9 in ESMFold)."""

    def __init__(self, c_z: int, c_hidden: int, no_heads: int, starting: bool, inf: float = 1e9):
        super().__init__()
        self.starting = starting
        self.inf = inf
        self.layer_norm = nn.LayerNorm(c_z)
        self.linear = nn.Linear(c_z, no_heads, bias=False)
        self.mha = GatedAttention(c_z, c_hidden, no_heads)
        nn.init.zeros_(self.mha.linear_o.weight)
        nn.init.zeros_(self.mha.linear_o.bias)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """z: (B, I, J, c_z); mask: (B, I, J) pair mask, 1 = valid. Returns the update (B, I, J, c_z)."""
        if mask is None:
            mask = z.new_ones(z.shape[:-1])
        if not self.starting:
            z = z.transpose(-2, -3)
            mask = mask.transpose(-1, -2)
        # One sequence at a time: the triangle bias b_jk is then one (H, J, K) tensor that every row shares.
        update = chunk_apply(lambda z_b, mask_b: self._one_sequence(z_b, mask_b, chunk_size), (z, mask), (0, 0), 1, 0)
        return update if self.starting else update.transpose(-2, -3)

    def _one_sequence(self, z: torch.Tensor, mask: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        """z: (1, I, J, c_z) rows to attend along; mask: (1, I, J). Returns (1, I, J, c_z)."""
        triangle_bias = chunk_apply(
            lambda z_rows: self.linear(self.layer_norm(z_rows)), (z,), (-3,), chunk_size, out_dim=-3
        )
        triangle_bias = triangle_bias[0].permute(2, 0, 1).contiguous()  # b_jk: (H, J, K)
        inf = min(self.inf, torch.finfo(z.dtype).max)
        mask_bias = inf * (mask[0].to(z.dtype) - 1)  # (I, K)

        def rows(z_rows: torch.Tensor, mask_bias_rows: torch.Tensor) -> torch.Tensor:
            """z_rows: (1, r, J, c_z); mask_bias_rows: (r, K) -> (1, r, J, c_z)."""
            if torch.equal(mask_bias_rows, mask_bias_rows[:1].expand_as(mask_bias_rows)):
                bias = (triangle_bias + mask_bias_rows[0]).unsqueeze(0)  # the rows share it: (1, H, J, K)
            else:
                bias = triangle_bias + mask_bias_rows[:, None, None, :]  # (r, H, J, K)
            return self.mha(self.layer_norm(z_rows[0]), bias).unsqueeze(0)

        return chunk_apply(rows, (z, mask_bias), (1, 0), chunk_size, out_dim=1)
