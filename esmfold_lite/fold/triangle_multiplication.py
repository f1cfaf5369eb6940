"""Triangle multiplicative update using outgoing (AlphaFold2 Algorithm 11) and incoming (Algorithm 12) edges.

    z̄ = LayerNorm_in(z)
    a = mask · sigmoid(W_ag z̄) ⊙ W_ap z̄          b = mask · sigmoid(W_bg z̄) ⊙ W_bp z̄
    outgoing: x_ij = Σ_k a_ik ⊙ b_jk               incoming: x_ij = Σ_k a_ki ⊙ b_kj
    update_ij = sigmoid(W_g z̄_ij) ⊙ W_z LayerNorm_out(x_ij)

The incoming update is the outgoing one applied to the transposed pair representation with the roles of a and
b exchanged, then transposed back; so one code path serves both.

Memory: the projections are computed ``chunk_size`` rows at a time into channel-first buffers (c, L, L), and the
product, output norm, output projection and gate run ``chunk_size`` output rows at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from esmfold_lite.fold.chunking import chunk_apply


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

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """z: (B, I, J, c_z); mask: (B, I, J) pair mask, 1 = valid. Returns the update (B, I, J, c_z)."""
        if mask is None:
            mask = z.new_ones(z.shape[:-1])
        mask = mask.to(z.dtype).unsqueeze(-1)
        a_layers = (self.linear_a_g, self.linear_a_p)
        b_layers = (self.linear_b_g, self.linear_b_p)
        if self.outgoing:
            left_layers, right_layers = a_layers, b_layers
        else:
            z, mask = z.transpose(-2, -3), mask.transpose(-2, -3)
            left_layers, right_layers = b_layers, a_layers

        def project(z_rows: torch.Tensor, mask_rows: torch.Tensor) -> torch.Tensor:
            """(B, r, K, c_z) -> (2, B, c, r, K): gated, masked left and right projections, channel-first."""
            z_rows = self.layer_norm_in(z_rows)
            pair = [
                mask_rows * torch.sigmoid(gate(z_rows)) * proj(z_rows) for gate, proj in (left_layers, right_layers)
            ]
            return torch.stack(pair).movedim(-1, -3)

        left, right = chunk_apply(project, (z, mask), (-3, -3), chunk_size, out_dim=-2)
        right_t = right.transpose(-1, -2)  # (B, c, K, J)

        def rows(left_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
            """left_rows: (B, c, r, K), z_rows: (B, r, J, c_z) -> update rows (B, r, J, c_z)."""
            x = torch.matmul(left_rows, right_t).movedim(-3, -1)  # x_ij = Σ_k left_ik ⊙ right_jk
            x = self.linear_z(self.layer_norm_out(x))
            return torch.sigmoid(self.linear_g(self.layer_norm_in(z_rows))) * x

        update = chunk_apply(rows, (left, z), (-2, -3), chunk_size, out_dim=-3)
        return update if self.outgoing else update.transpose(-2, -3)
