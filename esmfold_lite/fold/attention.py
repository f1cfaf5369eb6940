"""Gated multi-head attention with an additive bias (AlphaFold2 supplement 1.11.3 style gating).

Two parameterisations share one kernel, ``torch.nn.functional.scaled_dot_product_attention`` with a float
additive mask (pair bias and/or padding mask):

* ``SequenceAttention``: the trunk's attention over residues, biased by the pair representation. ESMFold packs
  q, k and v into one bias-free projection ``proj`` whose output is laid out per head as ``[q_h | k_h | v_h]``.
* ``GatedAttention``: the triangle attention's inner attention with separate ``linear_q/k/v`` (bias-free),
  gate ``linear_g`` and output ``linear_o``.

Both scale logits by ``1/sqrt(head_width)`` and gate the attended values with ``sigmoid(W_g x + b_g)`` before the
output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from esmfold_lite.fold.chunking import RowMap, chunk_apply, product_


def biased_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | RowMap,
    chunk_size: int | None = None,
    key_padding: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(c) + bias) v, optionally a chunk of queries at a time.

    Args:
        q: (N, H, Q, c); k, v: (N, H, K, c).
        bias: (N, H, Q, K) additive float bias (``-inf`` or a large negative number masks a key); an expanded
            (stride-0) view is broadcast by the kernel, not copied. A ``RowMap`` whose slices along its dimension
            are query slices of the bias is evaluated a chunk at a time, so the whole bias never exists.
        chunk_size: queries per chunk; ``None`` attends all queries at once.
        key_padding: (N, 1, 1, K) bool, True for keys to mask with ``-inf`` (applied to one chunk of the bias at
            a time, so a masked copy of the whole bias never exists).

    Returns:
        (N, H, Q, c)
    """

    def attend(q_chunk: torch.Tensor, bias_chunk: torch.Tensor) -> torch.Tensor:
        if key_padding is not None:
            bias_chunk = bias_chunk.masked_fill(key_padding, float("-inf"))
        return F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=bias_chunk)

    bias_dim = bias.dim if isinstance(bias, RowMap) else 2
    return chunk_apply(attend, (q, bias), (2, bias_dim), chunk_size, out_dim=2)


class SequenceAttention(nn.Module):
    """Gated self-attention over residues with a per-head pair bias (ESMFold trunk, ``seq_attention``).

    Args:
        embed_dim: c_s. num_heads: H. head_width: c = c_s / H.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_width: int):
        super().__init__()
        if embed_dim != num_heads * head_width:
            raise ValueError(f"embed_dim {embed_dim} must equal num_heads {num_heads} * head_width {head_width}")
        self.num_heads = num_heads
        self.head_width = head_width
        self.proj = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.o_proj = nn.Linear(embed_dim, embed_dim)
        self.g_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.o_proj.bias)
        nn.init.zeros_(self.g_proj.weight)
        nn.init.ones_(self.g_proj.bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | RowMap | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """x: (B, L, c_s); mask: (B, L), 1 = residue, 0 = padding; bias: (B, L, L, H), or a ``RowMap`` over
        query rows that gives it a chunk of queries at a time. Returns (B, L, c_s)."""
        batch, length, _ = x.shape
        # proj's output holds [q_h | k_h | v_h] per head h; q, k, v are strided views of it (no copy)
        q, k, v = rearrange(self.proj(x), "b l (h qkv c) -> qkv b h l c", h=self.num_heads, qkv=3)

        if bias is None:  # a broadcast zero: no memory (plain expand, a stride-0 view)
            logits_bias = x.new_zeros(1, 1, 1, 1).expand(batch, self.num_heads, length, length)
        elif isinstance(bias, RowMap):
            logits_bias = bias.then(lambda b: rearrange(b, "b i j h -> b h i j"))
        else:
            logits_bias = rearrange(bias, "b i j h -> b h i j")
        key_padding = None if mask is None else rearrange(mask == 0, "b j -> b 1 1 j")

        y = biased_attention(q, k, v, logits_bias, chunk_size, key_padding)
        y = rearrange(y, "b h l c -> b l (h c)")
        return self.o_proj(self.g_proj(x).sigmoid_() * y)


class GatedAttention(nn.Module):
    """Gated multi-head self-attention with an external bias (OpenFold ``Attention``, q_x == kv_x).

    Args:
        c_in: input/output channels. c_hidden: per-head width. no_heads: H.
    """

    def __init__(self, c_in: int, c_hidden: int, no_heads: int):
        super().__init__()
        self.c_hidden = c_hidden
        self.no_heads = no_heads
        width = c_hidden * no_heads
        self.linear_q = nn.Linear(c_in, width, bias=False)
        self.linear_k = nn.Linear(c_in, width, bias=False)
        self.linear_v = nn.Linear(c_in, width, bias=False)
        self.linear_o = nn.Linear(width, c_in)
        self.linear_g = nn.Linear(c_in, width)
        nn.init.zeros_(self.linear_g.weight)
        nn.init.ones_(self.linear_g.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(N, Q, H*c) -> (N, H, Q, c), a view"""
        return rearrange(t, "n q (h c) -> n h q c", h=self.no_heads)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: (*, Q, c_in); bias: broadcastable to (*, H, Q, Q). Returns (*, Q, c_in)."""
        lead, n_q = x.shape[:-2], x.shape[-2]
        flat = rearrange(x, "... q c -> (...) q c")  # SDPA's fused kernels want exactly one batch dimension
        q, k, v = (self._heads(linear(flat)) for linear in (self.linear_q, self.linear_k, self.linear_v))
        # plain expand + reshape: a bias broadcast over the leading dimensions stays a stride-0 view (no copy)
        bias = bias.expand(*lead, self.no_heads, n_q, n_q).reshape(-1, self.no_heads, n_q, n_q)
        o = rearrange(biased_attention(q, k, v, bias), "n h q c -> n q h c")
        # the gate is fresh memory and takes the product in place: view_as, which never copies
        g = self.linear_g(flat).sigmoid_().view_as(o)
        o = product_(g, o).reshape(*lead, n_q, -1)  # (*, Q, H*c): heads merged, x's leading dimensions restored
        return self.linear_o(o)
