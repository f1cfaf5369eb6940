"""ESMFold2's pair update stack: blocks of triangle multiplication (outgoing, then incoming) and a pair transition,
with no triangle attention and no single track. The folding trunk, the LM encoder, the parcae coda and the
confidence head each run one (transformers' ``EsmFold2PairUpdateStack``).

Triangle multiplicative update, AlphaFold2 Algorithms 11/12 without biases and with one fused input projection:

    z̄ = norm_start(z);   [p_a, p_b, g_a, g_b] = proj_bundle(z̄);   a = mask·p_a ⊙ σ(g_a),   b = mask·p_b ⊙ σ(g_b)
    outgoing: x_ij = Σ_k a_ik b_jk          incoming: x_ij = Σ_k a_ki b_kj
    update_ij = proj_emit(norm_mix(x_ij)) ⊙ σ(proj_gate(z̄_ij))

It is the same math as ESMFold's ``fold.triangle_multiplication`` (c_hidden = c_z, zero biases), so it runs on the
same schedule, ``fold.chunking.pairwise_update_`` (rows of a and b channel-first, the product one batched matmul,
the incoming update as the outgoing one on zᵀ with a and b exchanged). The parameters differ (fused, bias-free),
hence its own module. With autograd off every update is added into z in place: the caller owns z.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import LayerNorm, Transition
from esmfold_lite.fold.chunking import pairwise_update_, product_


class TriangleMultiplicativeUpdate(nn.Module):
    """Args: config (c_z = ``pairwise_hidden_size``, rows per step = ``chunk_size``); outgoing: Algorithm 11 or 12."""

    def __init__(self, config: EsmFold2Config, outgoing: bool = True):
        super().__init__()
        self.dim = c_z = config.pairwise_hidden_size
        self.outgoing = outgoing
        self.norm_start = LayerNorm(c_z, dtype=torch.float32)
        self.norm_mix = LayerNorm(c_z, dtype=torch.float32)
        self.proj_bundle = nn.Linear(c_z, 4 * c_z, bias=False)
        self.proj_emit = nn.Linear(c_z, c_z, bias=False)
        self.proj_gate = nn.Linear(c_z, c_z, bias=False)
        self.chunk_size = config.chunk_size or None

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """z: (B, L, L, c_z); mask: (B, L, L) pair mask, 1 = valid. Returns z + update (B, L, L, c_z)."""
        if mask is not None:
            mask = mask.to(z.dtype).unsqueeze(-1)
        if self.outgoing:  # x_ij = Σ_k a_ik b_jk
            return pairwise_update_(z, mask, self._a, self._b, self._update, self.chunk_size)
        # on v = zᵀ: x(v)_pq = Σ_k b(v)_pk a(v)_qk; v must stay a view of z (the update is added into it)
        v = z.transpose(1, 2)
        v_mask = None if mask is None else mask.transpose(1, 2)
        return pairwise_update_(v, v_mask, self._b, self._a, self._update, self.chunk_size).transpose(1, 2)

    def _a(self, z_rows: torch.Tensor, mask_rows: torch.Tensor | None) -> torch.Tensor:
        return self._gated(0, z_rows, mask_rows)

    def _b(self, z_rows: torch.Tensor, mask_rows: torch.Tensor | None) -> torch.Tensor:
        return self._gated(1, z_rows, mask_rows)

    def _gated(self, half: int, z_rows: torch.Tensor, mask_rows: torch.Tensor | None) -> torch.Tensor:
        """mask · p ⊙ σ(g) of a (``half`` 0) or b (1) for rows z_rows (B, r, K, c_z), mask_rows (B, r, K, 1) or
        None, channel first: (B, c_z, r, K)."""
        batch, rows, length, c_z = z_rows.shape
        z_bar = self.norm_start(z_rows).view(batch, rows * length, c_z)
        weight = self.proj_bundle.weight.view(4, c_z, c_z)[[half, 2 + half]].view(2 * c_z, c_z)  # (p; g)
        gated = nn.functional.glu(torch.matmul(weight, z_bar.transpose(1, 2)), dim=1)  # (B, c_z, r·K)
        if mask_rows is not None:
            gated = product_(gated, rearrange(mask_rows, "b r k 1 -> b 1 (r k)"))
        return rearrange(gated, "b c (r k) -> b c r k", r=rows)

    def _update(self, first: torch.Tensor, second: torch.Tensor, z_tile: torch.Tensor) -> torch.Tensor:
        """first: (B, c, r, K) of rows p; second: (B, c, K, q) of rows q; z_tile: (B, r, q, c_z) = z[:, p, q].
        Returns proj_emit(norm_mix(x_pq)) ⊙ σ(proj_gate(norm_start(z_pq))), (B, r, q, c_z)."""
        x = torch.matmul(first, second)  # (B, c, r, q)
        update = self.proj_emit(self.norm_mix(rearrange(x, "b c r q -> b r q c")))
        return product_(update, torch.sigmoid(self.proj_gate(self.norm_start(z_tile))))


class PairUpdateLayer(nn.Module):
    """z ← z + tri_mul_out(z); z ← z + tri_mul_in(z); z ← pair_transition(z). z: (B, L, L, c_z)."""

    def __init__(self, config: EsmFold2Config):
        super().__init__()
        self.tri_mul_out = TriangleMultiplicativeUpdate(config, outgoing=True)
        self.tri_mul_in = TriangleMultiplicativeUpdate(config, outgoing=False)
        self.pair_transition = Transition(
            config.pairwise_hidden_size, config.pair_transition_intermediate_size, config.chunk_size
        )

    def forward(self, z: torch.Tensor, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z: (B, L, L, c_z), updated in place with autograd off; pair_mask: (B, L, L) or None (all valid)."""
        z = self.tri_mul_out(z, pair_mask)
        z = self.tri_mul_in(z, pair_mask)
        return self.pair_transition.add_(z)


class PairUpdateStack(nn.Module):
    """``num_layers`` ``PairUpdateLayer`` blocks (``layers.<n>``). z: (B, L, L, c_z) -> (B, L, L, c_z), updated in
    place with autograd off (the caller owns z)."""

    def __init__(self, config: EsmFold2Config, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([PairUpdateLayer(config) for _ in range(num_layers)])

    def forward(self, z: torch.Tensor, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            z = layer(z, pair_mask)
        return z
