"""Triangle multiplicative update using outgoing (AlphaFold2 Algorithm 11) and incoming (Algorithm 12) edges.

    z̄ = LayerNorm_in(z)
    a = mask · sigmoid(W_ag z̄) ⊙ W_ap z̄          b = mask · sigmoid(W_bg z̄) ⊙ W_bp z̄
    outgoing: x_ij = Σ_k a_ik ⊙ b_jk               incoming: x_ij = Σ_k a_ki ⊙ b_kj
    update_ij = sigmoid(W_g z̄_ij) ⊙ W_z LayerNorm_out(x_ij)

Both read z row by row: a and b are projected from rows of z into channel-first (c, L, L) matrices, and the
product is a·bᵀ (outgoing) or aᵀ·b (incoming), one batched matmul over channels; no transposed copy of z is made.

Memory: channels are independent in the product, so with ``chunk_size`` set a and b exist only a block of
channels at a time (``chunk_size * c / L`` channels: the size of ``chunk_size`` rows, but at least c/8 so that z is
re-read at most 8 times), each block's projections computed ``chunk_size`` rows at a time, and x is the one full
(c, L, L) buffer. The output norm, projection and gate then run ``chunk_size`` rows at a time; with autograd off
each row's update overwrites the row of x it was computed from, so the update costs no further memory.
"""

from __future__ import annotations

import torch
from torch import nn

from esmfold_lite.fold.chunking import chunk_apply, product_


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
        layers = (self.linear_a_g, self.linear_a_p, self.linear_b_g, self.linear_b_p)
        weight = torch.stack([layer.weight for layer in layers])  # (4, c, c_z)
        bias = torch.stack([layer.bias for layer in layers])  # (4, c)

        def project(z_rows: torch.Tensor, mask_rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
            """(B, r, K, c_z) -> (2, B, c', r, K): a and b of c' channels for rows of z, channel-first."""
            y = nn.functional.linear(self.layer_norm_in(z_rows), weight.flatten(0, 1), bias.flatten())
            gate, proj = y.unflatten(-1, (2, 2, -1)).unbind(-2)  # (B, r, K, 2, c') each
            gated = product_(product_(torch.sigmoid(gate), mask_rows.unsqueeze(-1)), proj)
            return gated.movedim(-2, 0).movedim(-1, -3)

        def product(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            """x for the channels of ``weight`` (4, c', c_z): (B, c', I, J)."""
            a, b = chunk_apply(
                lambda z_rows, mask_rows: project(z_rows, mask_rows, weight, bias), (z, mask), (-3, -3), chunk_size, -2
            )
            if self.outgoing:
                return torch.matmul(a, b.transpose(-1, -2))  # x_ij = Σ_k a_ik b_jk
            return torch.matmul(a.transpose(-1, -2), b)  # x_ij = Σ_k a_ki b_kj

        channels = weight.shape[1]
        # a and b for about chunk_size rows' worth of channels, but at least c/8 (each block re-reads all of z)
        channel_chunk = None if chunk_size is None else max(channels // 8, chunk_size * channels // z.shape[-3], 1)
        x = chunk_apply(product, (weight, bias), (1, 1), channel_chunk, out_dim=-3)  # (B, c, I, J)

        def rows(x_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
            """x_rows: (B, c, r, J), z_rows: (B, r, J, c_z) -> update rows (B, r, J, c_z)."""
            x_rows = self.linear_z(self.layer_norm_out(x_rows.movedim(-3, -1)))
            return product_(self.linear_g(self.layer_norm_in(z_rows)).sigmoid_(), x_rows)

        overwrite_x = not torch.is_grad_enabled() and channels == z.shape[-1]
        return chunk_apply(rows, (x, z), (-2, -3), chunk_size, -3, out=x.movedim(-3, -1) if overwrite_x else None)
