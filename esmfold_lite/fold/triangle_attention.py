"""Triangle self-attention around the starting node (AlphaFold2 Algorithm 13) and the ending node (Algorithm 14).

Starting node: for every row i of the pair representation, edge (i, j) attends to edges (i, k), with a bias b_jk
projected from the pair representation itself:

    z̄ = LayerNorm(z);  b_jk = W_b z̄_jk;  z_ij ← z_ij + Attention_k(q(z̄_ij), k(z̄_ik), v(z̄_ik), b_jk)

The ending node is the same computation on the transposed pair representation (attention along columns), so both
work on rows of a view v of z (z itself, or zᵀ).

Rows are independent once the bias is known, so the update is added into v ``chunk_size`` rows at a time
(``chunking.add_update_``). Rows whose pair-mask rows are equal share one (H, J, K) bias (triangle bias plus the
mask's key bias), built once per run of such rows and broadcast by the attention kernel; without padding that is
one bias per sequence.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.fold.attention import GatedAttention
from esmfold_lite.fold.chunking import add_update_, chunk_apply


def equal_row_runs(rows: torch.Tensor) -> list[tuple[int, int]]:
    """(start, stop) of the runs of consecutive equal rows of a 2-D tensor (one run when all rows are equal)."""
    changes = (rows[1:] != rows[:-1]).any(dim=-1).nonzero().flatten().add(1).tolist()
    edges = [0, *changes, rows.shape[0]]
    return list(zip(edges[:-1], edges[1:], strict=True))


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

    def forward(
        self,
        z: torch.Tensor,
        mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        dropout: nn.Module | None = None,
    ) -> torch.Tensor:
        """z: (B, I, J, c_z); mask: (B, I, J) pair mask, 1 = valid. Returns z + update (B, I, J, c_z).

        With autograd off the update is added into ``z`` (the caller owns it). ``dropout`` (training) acts on the
        update in z's layout, a whole row (starting node) or column (ending node) at a time.
        """
        if mask is not None and not self.starting:
            mask = rearrange(mask, "b i j -> b j i")
        # ending node: v = zᵀ. Plain transpose, not a pattern: v must be a view of z, since the update is added
        # into v in place and has to land in z.
        v = z if self.starting else z.transpose(1, 2)
        out = [
            self._one_sequence(v[b : b + 1], None if mask is None else mask[b], chunk_size, dropout)
            for b in range(v.shape[0])
        ]
        if not torch.is_grad_enabled():
            return z  # every sequence was updated in place
        out = torch.cat(out)
        return out if self.starting else rearrange(out, "b j i c -> b i j c")

    def _one_sequence(
        self, v: torch.Tensor, mask: torch.Tensor | None, chunk_size: int | None, dropout: nn.Module | None
    ) -> torch.Tensor:
        """v: (1, I, J, c_z) rows to attend along; mask: (I, J) or None. Returns v + update (1, I, J, c_z)."""
        triangle_bias = chunk_apply(
            lambda v_rows: self.linear(self.layer_norm(v_rows)), (v,), (1,), chunk_size, out_dim=1
        )
        # b_jk: (H, J, K), one contiguous copy shared by the runs below (the last one adds its mask bias in place)
        triangle_bias = rearrange(triangle_bias, "1 j k h -> h j k").contiguous()
        if mask is None:
            runs, mask_bias = [(0, v.shape[1])], None
        else:
            mask_bias = min(self.inf, torch.finfo(v.dtype).max) * (mask.to(v.dtype) - 1)  # (I, K)
            runs = equal_row_runs(mask_bias)

        pieces = []
        for run, (start, stop) in enumerate(runs):
            # shared by the run's rows: (1, H, J, K); the last run may take the triangle bias's memory
            bias = triangle_bias
            if mask_bias is not None:
                last = run == len(runs) - 1 and not torch.is_grad_enabled()
                bias = triangle_bias.add_(mask_bias[start]) if last else triangle_bias + mask_bias[start]
            bias = bias.unsqueeze(0)

            def update(v_rows: torch.Tensor, bias: torch.Tensor = bias) -> torch.Tensor:
                """(1, r, J, c_z) -> (1, r, J, c_z)"""
                out = self.mha(self.layer_norm(v_rows[0].contiguous()), bias).unsqueeze(0)
                if dropout is None:
                    return out
                if self.starting:
                    return dropout(out)
                return rearrange(dropout(rearrange(out, "1 j i c -> 1 i j c")), "1 i j c -> 1 j i c")  # in z's layout

            pieces.append(add_update_(v[:, start:stop], update, chunk_size))
        return torch.cat(pieces, dim=1) if torch.is_grad_enabled() else v
