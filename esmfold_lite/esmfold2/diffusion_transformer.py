"""The denoiser's token transformer (AF3's DiffusionTransformer): gated self-attention with a per-head pair bias and
a SwiGLU feed-forward, both adaLN-conditioned on the single stream and gated by it.

The pair bias (with token padding folded in) depends on neither the noise level nor the coordinates, so it is built
once per fold (``pair_biases``) and every denoising step reuses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import AdaptiveLayerNorm, LayerNorm, SwiGLU


class DiffusionAttention(nn.Module):
    """Multi-head self-attention over tokens with an additive bias and a sigmoid output gate (a query bias only)."""

    def __init__(self, hidden_size: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=True)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.gate_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x: [B, N, C]; bias: [B or 1, H, N, N] additive. Returns [B, N, C]."""
        heads = (*x.shape[:-1], -1, self.head_dim)
        q, k, v = (proj(x).view(heads).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype)).transpose(1, 2).reshape(x.shape)
        return self.o_proj(out * torch.sigmoid(self.gate_proj(x)))


class DiffusionLayer(nn.Module):
    """adaLN -> pair-bias attention -> sigmoid(attn_gate(s)) residual; adaLN -> SwiGLU -> sigmoid(mlp_gate(s))."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        diffusion = config.structure_head.diffusion_module
        width = diffusion.hidden_size
        self.input_layernorm = AdaptiveLayerNorm(width)
        self.self_attn = DiffusionAttention(width, diffusion.head_dim)
        self.attn_gate = nn.Linear(width, width, bias=True)
        self.post_attention_layernorm = AdaptiveLayerNorm(width)
        self.mlp = SwiGLU(width, diffusion.intermediate_size)
        self.mlp_gate = nn.Linear(width, width, bias=True)
        self.pair_norm = LayerNorm(config.pairwise_hidden_size)
        self.pair_bias_proj = nn.Linear(config.pairwise_hidden_size, diffusion.num_attention_heads, bias=False)

    def pair_bias(self, pair: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """This layer's attention bias [B, H, N, N] from the pair conditioning [B, N, N, c_z], padding keys (token_mask
        [B, N] False) at the dtype's minimum."""
        bias = self.pair_bias_proj(self.pair_norm(pair)).permute(0, 3, 1, 2)
        if token_mask is not None:
            bias = bias.masked_fill(~token_mask[:, None, None, :], torch.finfo(bias.dtype).min)
        return bias

    def forward(self, x: Tensor, single: Tensor, bias: Tensor) -> Tensor:
        """x: [B, N, C] token states; single: [B, N, C] conditioning; bias: from ``pair_bias``. Returns [B, N, C]."""
        x = x + torch.sigmoid(self.attn_gate(single)) * self.self_attn(self.input_layernorm(x, single), bias)
        mlp_out = self.mlp(self.post_attention_layernorm(x, single))
        return x + torch.sigmoid(self.mlp_gate(single)) * mlp_out


class DiffusionTransformer(nn.Module):
    """``num_hidden_layers`` `DiffusionLayer`s, each with its own pair bias."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        layers = config.structure_head.diffusion_module.num_hidden_layers
        self.layers = nn.ModuleList([DiffusionLayer(config) for _ in range(layers)])

    def pair_biases(self, pair: Tensor, token_mask: Tensor | None = None) -> list[Tensor]:
        """One [B, H, N, N] bias per layer (see `DiffusionLayer.pair_bias`), built once per fold."""
        return [layer.pair_bias(pair, token_mask) for layer in self.layers]

    def forward(self, x: Tensor, single: Tensor, biases: list[Tensor]) -> Tensor:
        """x, single: [B, N, C]; biases: from ``pair_biases``. Returns [B, N, C]."""
        for layer, bias in zip(self.layers, biases, strict=True):
            x = layer(x, single, bias)
        return x
