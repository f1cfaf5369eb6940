"""Multi-head self-attention, with rotary position embeddings (ESM-2) or without (ESM-1b, whose positions are
added to the input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from esmfold_lite.lm.rotary import RotaryEmbedding


class SelfAttention(nn.Module):
    """Scaled dot-product self-attention over ``H`` heads of width ``D / H``; with ``rotary``, rotary positions on
    ``q`` and ``k``.

    Parameter names equal fair-esm's ``MultiheadAttention`` (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
    The query is scaled by ``1 / sqrt(D / H)`` before the rotation, as in the original.
    Without ``need_weights`` the product runs in ``F.scaled_dot_product_attention`` (fused kernels where available);
    with it, an explicit float32 softmax returns the per-head probabilities.
    """

    def __init__(self, embed_dim: int, num_heads: int, rotary: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim) if rotary else None

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over the sequence.

        Args:
            x: ``(B, T, D)``.
            padding_mask: ``(B, T)`` bool, True at padding; padded keys get no attention. ``None``: no padding.
            need_weights: also return the attention probabilities.

        Returns:
            ``(B, T, D)`` output and, when asked, ``(B, H, T, T)`` probabilities (query, key), else ``None``.
        """
        q = self._split_heads(self.q_proj(x) * self.scaling)
        k = self._split_heads(self.k_proj(x))
        v = self._split_heads(self.v_proj(x))
        if self.rot_emb is not None:
            q, k = self.rot_emb(q, k)

        weights = None
        if need_weights:
            scores = einsum(q, k, "b h i d, b h j d -> b h i j")
            if padding_mask is not None:
                scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
            weights = scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
            out = einsum(weights, v, "b h i j, b h j d -> b h i d")
        else:
            keep = None if padding_mask is None else ~padding_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0)
        return self.out_proj(rearrange(out, "b h t d -> b t (h d)")), weights

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, H, T, D / H)``, a view."""
        return rearrange(x, "b t (h d) -> b h t d", h=self.num_heads)
