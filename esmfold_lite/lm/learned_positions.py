"""Learned absolute position embeddings with fairseq's padding offset (ESM-1b, ESM-1v, MSA Transformer).

Positions count the non-pad tokens of a row from ``padding_idx + 1`` on (``<cls>`` included), and every pad token
gets position ``padding_idx``, whose row of the table is never used for a real token. The table therefore has
``max_positions + padding_idx + 1`` rows; a row longer than ``max_positions`` tokens has no embedding.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositionalEmbedding(nn.Embedding):
    """``(..., T)`` tokens -> ``(..., T, D)`` position vectors; parameter ``weight`` as in fair-esm."""

    def __init__(self, max_positions: int, embed_dim: int, padding_idx: int):
        super().__init__(max_positions + padding_idx + 1, embed_dim, padding_idx=padding_idx)
        self.max_positions = max_positions

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] > self.max_positions:
            raise ValueError(f"{tokens.shape[-1]} tokens per row, more than the {self.max_positions} learned positions")
        is_token = tokens.ne(self.padding_idx).long()
        positions = torch.cumsum(is_token, dim=-1) * is_token + self.padding_idx
        return super().forward(positions)
