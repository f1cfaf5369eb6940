"""Triangle multiplicative update using outgoing (AlphaFold2 Algorithm 11) and incoming (Algorithm 12) edges.

    z̄ = LayerNorm_in(z)
    a = mask · sigmoid(W_ag z̄) ⊙ W_ap z̄          b = mask · sigmoid(W_bg z̄) ⊙ W_bp z̄
    outgoing: x_ij = Σ_k a_ik ⊙ b_jk               incoming: x_ij = Σ_k a_ki ⊙ b_kj
    z_ij ← z_ij + sigmoid(W_g z̄_ij) ⊙ W_z LayerNorm_out(x_ij)

Layout: a and b are projected channel-first, (B, c, rows, K), so the product is one plain batched matmul over
channels with the right operand transposed (x = a·bᵀ per channel, which the GEMM reads without a copy). The
incoming update is the outgoing one on the transposed pair representation v = zᵀ with the roles of a and b
exchanged: x_ij = Σ_k b(v)_jk a(v)_ik, i.e. x(v)_pq = Σ_k b(v)_pk a(v)_qk at v_pq = z_qp. So both read rows of a
view of z and use the same schedule, ``chunking.pairwise_update_``, which owns every memory decision: how many
rows at a time (``chunk_size``) and how many row blocks (``blocks``: 1 keeps one full-size operand, more trade
recomputation for memory).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.fold.chunking import pairwise_update_, product_


class TriangleMultiplication(nn.Module):
    """Args: c_z: pair channels. c_hidden: channels of a and b. outgoing: Algorithm 11 if True, else 12."""

    def __init__(self, c_z: int, c_hidden: int, outgoing: bool):
        super().__init__()
        self.outgoing = outgoing
        self.linear_a_p = nn.Linear(c_z, c_hidden)
        self.linear_a_g = nn.Linear(c_z, c_hidden)
        self.linear_b_p = nn.Linear(c_z, c_hidden)
        self.linear_b_g = nn.Linear(c_z, c_hidden)
        self.linear_g = nn.Linear(c_z, c_z)
        self.linear_z = nn.Linear(c_hidden, c_z)
        self.layer_norm_in = nn.LayerNorm(c_z)
        self.layer_norm_out = nn.LayerNorm(c_hidden)
        for gate in (self.linear_a_g, self.linear_b_g, self.linear_g):
            nn.init.zeros_(gate.weight)
            nn.init.ones_(gate.bias)
        nn.init.zeros_(self.linear_z.weight)
        nn.init.zeros_(self.linear_z.bias)

    def forward(
        self,
        z: torch.Tensor,
        mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        blocks: int = 1,
        dropout: nn.Module | None = None,
    ) -> torch.Tensor:
        """z: (B, I, J, c_z); mask: (B, I, J) pair mask, 1 = valid. Returns z + update (B, I, J, c_z).

        With autograd off the update is added into ``z`` (the caller owns it), ``chunk_size`` rows at a time;
        ``blocks`` row blocks of the schedule (see ``chunking.pairwise_update_``). The result does not depend on
        either. ``dropout`` (training) acts on the update in z's layout, whole rows (outgoing) or columns (incoming).
        """
        if mask is not None:
            mask = mask.to(z.dtype).unsqueeze(-1)
        update, whole_rows = self._update, False
        if dropout is not None and dropout.training:
            blocks, whole_rows = 1, True  # whole rows of v per update, so a shared dropout mask stays shared

            def update(first, second, z_tile):
                out = self._update(first, second, z_tile)
                if self.outgoing:
                    return dropout(out)
                return rearrange(dropout(rearrange(out, "b j i c -> b i j c")), "b i j c -> b j i c")  # in z's layout

        if self.outgoing:  # x_ij = Σ_k a_ik b_jk: a from row i, b from row j
            return pairwise_update_(z, mask, self._a, self._b, update, chunk_size, blocks, whole_rows)
        # x_ij = Σ_k a_ki b_kj: on v = zᵀ, x(v)_pq = Σ_k b(v)_pk a(v)_qk. Plain transpose, not a pattern: v must be
        # a view of z, since the update is added into v in place and has to land in z.
        v = z.transpose(1, 2)
        v_mask = None if mask is None else rearrange(mask, "b i j 1 -> b j i 1")
        v = pairwise_update_(v, v_mask, self._b, self._a, update, chunk_size, blocks, whole_rows)
        return rearrange(v, "b j i c -> b i j c")

    def _a(self, z_rows: torch.Tensor, mask_rows: torch.Tensor | None) -> torch.Tensor:
        return self._gated(self.linear_a_g, self.linear_a_p, z_rows, mask_rows)

    def _b(self, z_rows: torch.Tensor, mask_rows: torch.Tensor | None) -> torch.Tensor:
        return self._gated(self.linear_b_g, self.linear_b_p, z_rows, mask_rows)

    def _gated(
        self, gate: nn.Linear, proj: nn.Linear, z_rows: torch.Tensor, mask_rows: torch.Tensor | None
    ) -> torch.Tensor:
        """mask · sigmoid(W_g z̄) ⊙ W_p z̄ for rows z_rows (B, r, K, c_z), mask_rows (B, r, K, 1) or None, channel
        first: (B, c, r, K)."""
        batch, rows, length, _ = z_rows.shape
        z_bar = self.layer_norm_in(z_rows).view(batch, rows * length, -1)
        weight = torch.cat([proj.weight, gate.weight])  # (2c, c_z): one matmul, channel-first output
        bias = torch.cat([proj.bias, gate.bias])[:, None]
        # plain view + transpose: baddbmm reads z̄ as the transposed (c_z, r·K) operand without a copy
        gated = nn.functional.glu(torch.baddbmm(bias, weight.expand(batch, -1, -1), z_bar.transpose(1, 2)), dim=1)
        if mask_rows is not None:
            gated = product_(gated, rearrange(mask_rows, "b r k 1 -> b 1 (r k)"))
        return rearrange(gated, "b c (r k) -> b c r k", r=rows)

    def _update(self, first: torch.Tensor, second: torch.Tensor, z_tile: torch.Tensor) -> torch.Tensor:
        """first: (B, c, r, K) of rows p; second: (B, c, K, q) of rows q; z_tile: (B, r, q, c_z) = z[:, p, q].

        Returns sigmoid(W_g z̄_pq) ⊙ W_z LayerNorm_out(x_pq) with x_pq = Σ_k first_pk second_kq, (B, r, q, c_z).
        """
        x = torch.matmul(first, second)  # (B, c, r, q); plain matmul: the GEMM reads a transposed second as it is
        update = self.linear_z(self.layer_norm_out(rearrange(x, "b c r q -> b r q c")))
        return product_(update, torch.sigmoid(self.linear_g(self.layer_norm_in(z_tile))))
