"""Rotary position embedding (RoPE; Su et al. 2021, "RoFormer"), as ESM-2 applies it to queries and keys.

Channel ``i`` and channel ``i + head_dim/2`` of every head form a pair rotated by the angle ``t * inv_freq[i]`` at
position ``t`` (the "rotate half" layout of fair-esm and GPT-NeoX, not interleaved pairs).
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates queries and keys by position-dependent angles, so that ``q·k`` depends on relative position only.

    The angle tables are computed in float32 from a float32 ``inv_freq`` on every call (``T * head_dim`` values,
    negligible next to attention) and cast to the input dtype, so a half-precision model keeps exact angles.
    ``inv_freq`` is not part of the state dict: it is a fixed function of ``head_dim``.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.base = base

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """``(head_dim / 2,)`` float32 inverse frequencies ``base ** (-2i / head_dim)``."""
        exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
        return 1.0 / (self.base**exponents)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q, k: (..., T, head_dim)``; position ``t`` is the index along the ``T`` axis."""
        positions = torch.arange(k.shape[-2], device=k.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq(k.device))  # (T, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim)
        cos, sin = angles.cos().to(k.dtype), angles.sin().to(k.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
