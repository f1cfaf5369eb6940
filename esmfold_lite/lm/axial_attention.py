"""Axial attention over an MSA (Rao et al. 2021, "MSA Transformer"): tied row attention and column attention.

Both act on ``x: (B, R, C, D)`` (batch, rows = aligned sequences, columns = alignment positions, channels) with
``H`` heads of width ``D / H``, and take ``padding_mask: (B, R, C)`` (True at ``<pad>``) or None. Masked logits are
set to -10,000 (not -inf), as in the original, so a fully padded query still gets finite weights.
Parameter names equal fair-esm's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from torch import nn

MASKED_LOGIT = -10000.0


class _AxialProjections(nn.Module):
    """The four linear maps of one attention and the split into heads."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, R, C, D) -> (B, R, C, H, D / H)``, a view."""
        return rearrange(x, "b r c (h d) -> b r c h d", h=self.num_heads)

    def merged(self, context: torch.Tensor) -> torch.Tensor:
        """The heads' outputs ``(B, R, C, H, D / H)`` -> ``out_proj`` of ``(B, R, C, D)``."""
        return self.out_proj(rearrange(context, "b r c h d -> b r c (h d)"))


class RowSelfAttention(_AxialProjections):
    """Tied row attention: every row attends along its columns with one map shared by all rows of the MSA.

    The logits of all rows are summed, ``sum_r q_ri · k_rj``, with the query scaled by ``1 / sqrt(head_dim * R)``
    (R = rows of the padded input); padded query positions contribute nothing and padded columns (those padded in the
    first row) get no attention.
    """

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, R, C, D)`` -> output ``(B, R, C, D)`` and attention probabilities ``(B, H, C, C)``."""
        rows = x.shape[1]
        q = self.heads(self.q_proj(x)) * (self.scaling / math.sqrt(rows))
        if padding_mask is not None:
            q = q * (~padding_mask)[..., None, None].to(q.dtype)
        k = self.heads(self.k_proj(x))
        # q_rih · k_rjh summed over rows r too (tied). torch.einsum, not einops.einsum: with two summed axes torch
        # orders the sum by the equation's letters, and einops' renaming would change that order (last-bit changes)
        logits = torch.einsum("brihd,brjhd->bhij", q, k)
        if padding_mask is not None:  # keys j padded in the first row
            logits = logits.masked_fill(rearrange(padding_mask[:, 0], "b j -> b 1 1 j"), MASKED_LOGIT)
        probs = logits.softmax(-1)
        context = einsum(probs, self.heads(self.v_proj(x)), "b h i j, b r j h d -> b r i h d")
        return self.merged(context), probs


class ColumnSelfAttention(_AxialProjections):
    """Column attention: in every column, each row attends over the rows (standard attention, not tied).

    Columns are processed in chunks so that a chunk holds at most ``max_tokens_per_msa`` MSA tokens (at least one
    column): the ``(B, H, C, R, R)`` logits of a deep MSA would not fit in memory at once. The result does not
    depend on the chunking.
    """

    def __init__(self, embed_dim: int, num_heads: int, max_tokens_per_msa: int = 2**14):
        super().__init__(embed_dim, num_heads)
        self.max_tokens_per_msa = max_tokens_per_msa

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, R, C, D)`` -> output ``(B, R, C, D)`` and attention probabilities ``(B, H, C, R, R)``."""
        rows, columns = x.shape[1], x.shape[2]
        step = max(1, self.max_tokens_per_msa // rows)
        outputs, probabilities = [], []
        for start in range(0, columns, step):
            part = slice(start, start + step)
            mask = None if padding_mask is None else padding_mask[:, :, part]
            output, probs = self._attend(x[:, :, part], mask)
            outputs.append(output)
            probabilities.append(probs)
        return torch.cat(outputs, dim=2), torch.cat(probabilities, dim=2)

    def _attend(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.heads(self.q_proj(x)) * self.scaling
        k = self.heads(self.k_proj(x))
        logits = einsum(q, k, "b i c h d, b j c h d -> b h c i j")  # rows i attend to rows j within column c
        if padding_mask is not None:  # padded key rows j
            logits = logits.masked_fill(rearrange(padding_mask, "b j c -> b 1 c 1 j"), MASKED_LOGIT)
        probs = logits.softmax(-1)
        context = einsum(probs, self.heads(self.v_proj(x)), "b h c i j, b j c h d -> b i c h d")
        return self.merged(context), probs
