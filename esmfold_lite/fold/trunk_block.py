"""One block of the ESMFold folding trunk ("triangular self-attention block").

Sequence track: pair-biased gated self-attention over residues, then a residual MLP.
Pair track: outer product/difference of the sequence state, triangle multiplication (outgoing, incoming),
triangle attention (starting, ending node), then a residual MLP (the pair transition).

Every O(L²) or O(L³) step takes ``chunk_size`` and evaluates itself a slice of rows (or queries) at a time through
``esmfold_lite.fold.chunking``; results do not depend on it. With autograd off, the block consumes its pair input:
every pair update is added into z in place, a slice at a time, and no other full-size pair tensor exists except the
triangle multiplication's operand when ``pair_blocks`` is 1 (``chunking.pairwise_update_``). The sequence
attention's pair bias is computed a chunk of query rows at a time from z.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.fold.attention import SequenceAttention
from esmfold_lite.fold.chunking import RowMap, add_update_, chunk_apply, residual_add_
from esmfold_lite.fold.triangle_attention import TriangleAttention
from esmfold_lite.fold.triangle_multiplication import TriangleMultiplication


class SequenceToPair(nn.Module):
    """Pair update from the sequence state: z_ij = W_o [q_j ⊙ k_i, q_j − k_i] + b_o with q, k = W_p LN(s).

    With W_o = [W_1 | W_2] the update is bilinear in (k_i, q_j) plus two per-residue terms,
    z_ij = Σ_d k_id (q_jd W_1[:, d]) + (W_2 q_j + b_o) − W_2 k_i, so rows i are one matmul of k_i with a
    (d, j·c_z) table, and no (rows, L, 2d) input is ever built.
    """

    def __init__(self, c_s: int, inner_dim: int, c_z: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(c_s)
        self.proj = nn.Linear(c_s, 2 * inner_dim)
        self.o_proj = nn.Linear(2 * inner_dim, c_z)
        nn.init.zeros_(self.proj.bias)
        nn.init.zeros_(self.o_proj.weight)
        nn.init.zeros_(self.o_proj.bias)

    def forward(self, s: torch.Tensor, chunk_size: int | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """s: (B, L, c_s) -> the update (B, L, L, c_z); with ``z`` (B, L, L, c_z) given, z + update instead, added
        into z ``chunk_size`` rows at a time when autograd is off."""
        q, k = self.proj(self.layernorm(s)).chunk(2, dim=-1)  # (B, L, d)
        w_1, w_2 = self.o_proj.weight.split(q.shape[-1], dim=1)  # (c_z, d) each
        c_z = w_1.shape[0]
        table = rearrange(q[:, :, None, :] * w_1, "b j c d -> b d (j c)")  # q_jd W_1[c, d]
        per_j = rearrange(nn.functional.linear(q, w_2, self.o_proj.bias), "b j c -> b 1 (j c)")  # W_2 q_j + b_o
        per_i = nn.functional.linear(k, w_2)  # W_2 k_i: (B, L, c_z)

        def rows(k_rows: torch.Tensor, per_i_rows: torch.Tensor) -> torch.Tensor:
            """k_rows: (B, r, d); per_i_rows: (B, r, c_z) -> (B, r, L, c_z)"""
            out = rearrange(torch.baddbmm(per_j, k_rows, table), "b i (j c) -> b i j c", c=c_z)  # a view
            return out.sub_(per_i_rows[:, :, None])  # in place: out is fresh memory

        if z is None:
            return chunk_apply(rows, (k, per_i), (1, 1), chunk_size, out_dim=1)
        return add_update_(z, lambda z_rows, *extra: rows(*extra), chunk_size, extra=(k, per_i), extra_dims=(1, 1))


class PairToSequence(nn.Module):
    """Per-head attention bias for the sequence attention: W LN(z), (B, L, L, c_z) -> (B, L, L, H)."""

    def __init__(self, c_z: int, num_heads: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(c_z)
        self.linear = nn.Linear(c_z, num_heads, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        return chunk_apply(lambda z_rows: self.linear(self.layernorm(z_rows)), (z,), (1,), chunk_size, out_dim=1)


class ResidueMLP(nn.Module):
    """Residual transition x + Dropout(W_2 ReLU(W_1 LN(x))), applied per position; x: (B, L, [L,] C).

    With autograd off the update is added into ``x`` (the caller owns it), ``chunk_size`` rows at a time.
    """

    def __init__(self, embed_dim: int, inner_dim: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, inner_dim),
            nn.ReLU(inplace=True),
            nn.Linear(inner_dim, embed_dim),
            nn.Dropout(dropout),
        )
        nn.init.zeros_(self.mlp[-2].weight)
        nn.init.zeros_(self.mlp[-2].bias)

    def forward(self, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        # the hidden layer is (inner / embed) times wider than x: as many times fewer rows per slice keep its
        # temporaries the size of every other step's (measured 1.5x faster on the CPU at L=512)
        widening = max(1, self.mlp[1].out_features // self.mlp[1].in_features)
        return add_update_(x, self.mlp, None if chunk_size is None else max(1, chunk_size // widening))


class SharedDropout(nn.Module):
    """Dropout whose mask is shared along one dimension (whole rows or columns of the pair representation)."""

    def __init__(self, p: float, shared_dim: int):
        super().__init__()
        self.shared_dim = shared_dim
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout.p == 0:
            return x
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        return x * self.dropout(x.new_ones(shape))


class TriangularSelfAttentionBlock(nn.Module):
    """Args: c_s, c_z: sequence / pair channels; sequence_head_width, pairwise_head_width: per-head widths
    (heads = channels / width); dropout: rate of the sequence dropout (pair row/column dropout uses twice it)."""

    def __init__(self, c_s: int, c_z: int, sequence_head_width: int, pairwise_head_width: int, dropout: float = 0.0):
        super().__init__()
        if c_s % sequence_head_width or c_z % pairwise_head_width or c_z % 2:
            raise ValueError(
                f"c_s={c_s} must be a multiple of sequence_head_width={sequence_head_width}, and c_z={c_z} an even "
                f"multiple of pairwise_head_width={pairwise_head_width}"
            )
        if not 0 <= dropout < 0.4:
            raise ValueError(f"dropout must be in [0, 0.4), got {dropout}")
        sequence_heads = c_s // sequence_head_width
        pairwise_heads = c_z // pairwise_head_width

        self.layernorm_1 = nn.LayerNorm(c_s)
        self.sequence_to_pair = SequenceToPair(c_s, c_z // 2, c_z)
        self.pair_to_sequence = PairToSequence(c_z, sequence_heads)
        self.seq_attention = SequenceAttention(c_s, sequence_heads, sequence_head_width)
        nn.init.zeros_(self.seq_attention.o_proj.weight)
        self.tri_mul_out = TriangleMultiplication(c_z, c_z, outgoing=True)
        self.tri_mul_in = TriangleMultiplication(c_z, c_z, outgoing=False)
        self.tri_att_start = TriangleAttention(c_z, pairwise_head_width, pairwise_heads, starting=True)
        self.tri_att_end = TriangleAttention(c_z, pairwise_head_width, pairwise_heads, starting=False)
        self.mlp_seq = ResidueMLP(c_s, 4 * c_s, dropout)
        self.mlp_pair = ResidueMLP(c_z, 4 * c_z, dropout)

        self.drop = nn.Dropout(dropout)
        self.row_drop = SharedDropout(2 * dropout, shared_dim=2)
        self.col_drop = SharedDropout(2 * dropout, shared_dim=1)

    def forward(
        self,
        s: torch.Tensor,
        z: torch.Tensor,
        mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        pair_blocks: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s: (B, L, c_s); z: (B, L, L, c_z); mask: (B, L), 1 = residue, 0 = padding.

        Returns the updated (s, z). With autograd off z is updated in place (the caller hands it over); s is not.
        ``chunk_size``: rows (or queries) per slice; ``pair_blocks``: row blocks of the triangle multiplications
        (1: fastest; more: less memory). Neither changes the result.
        """
        if mask is not None:
            mask = None if bool(mask.all()) else mask.to(z.dtype)  # no padding: nothing to mask

        bias = RowMap(self.pair_to_sequence, z, dim=1)  # (B, L, L, H), computed per chunk of query rows
        y = self.seq_attention(self.layernorm_1(s), mask=mask, bias=bias, chunk_size=chunk_size)
        s = residual_add_(self.drop(y), s)  # s + y, in y's memory: the input s stays untouched
        s = self.mlp_seq(s)

        z = self.sequence_to_pair(s, chunk_size, z=z)
        pair_mask = mask[:, :, None] * mask[:, None, :] if mask is not None else None
        z = self.tri_mul_out(z, pair_mask, chunk_size, pair_blocks, dropout=self.row_drop)
        z = self.tri_mul_in(z, pair_mask, chunk_size, pair_blocks, dropout=self.col_drop)
        z = self.tri_att_start(z, pair_mask, chunk_size, dropout=self.row_drop)
        z = self.tri_att_end(z, pair_mask, chunk_size, dropout=self.col_drop)
        z = self.mlp_pair(z, chunk_size)
        return s, z
