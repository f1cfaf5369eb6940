"""The small layers every part of ESMFold2 shares: norms, the SwiGLU feed-forward and its residual transition,
adaptive LayerNorm, the Fourier noise embedding, and the atom stack's 3D rotary embedding.

Parameter and buffer names are transformers' (``EsmFold2LayerNorm``, ``EsmFold2SwiGLU``, ...), so a checkpoint's
state dict loads as it is. Norms compute in fp32 and return the input dtype, as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.esmfold2.config import AtomEncoderConfig
from esmfold_lite.fold.chunking import add_update_, chunk_apply


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (keep ``weight``/``bias`` fp32), returned in the input's dtype. x: (..., C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """Weightless RMSNorm x / sqrt(mean(x²) + eps) over the last dimension, in fp32, returned in x's dtype."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)).type_as(x)


class SwiGLU(nn.Module):
    """down_proj(silu(gate) ⊙ up) with gate, up = gate_up_proj(x) split in halves (gate first). x: (..., C)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * F.silu(gate))


class Transition(nn.Module):
    """Residual feed-forward x + SwiGLU(LayerNorm(x)), ``chunk_size`` positions of dimension 1 at a time (None:
    all at once; the same numbers either way). x: (B, L, ..., C) -> same shape."""

    def __init__(self, hidden_size: int, intermediate_size: int, chunk_size: int | None):
        super().__init__()
        self.norm = LayerNorm(hidden_size, dtype=torch.float32)
        self.mlp = SwiGLU(hidden_size, intermediate_size)
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chunk_apply(lambda rows: rows + self.mlp(self.norm(rows)), (x,), (1,), self.chunk_size or None, 1)

    def add_(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)``, but with autograd off added into ``x`` (the caller owns it) a chunk at a time, so no
        second full-size tensor exists."""
        return add_update_(x, lambda rows: self.mlp(self.norm(rows)), self.chunk_size or None, dim=1)


class AdaptiveLayerNorm(nn.Module):
    """adaLN: sigmoid(gate_proj(s̄)) ⊙ LayerNorm(x) + shift_proj(s̄), s̄ = cond_norm(s); the affine of x's norm
    comes from the conditioning s. x, s: (..., C) -> (..., C) in x's dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.cond_norm = LayerNorm(hidden_size, eps=eps, bias=False)
        self.gate_proj = nn.Linear(hidden_size, hidden_size, bias=True)
        self.shift_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x_bar = F.layer_norm(x.float(), (self.hidden_size,), None, None, self.eps)  # fp32: one rounding below
        s_bar = self.cond_norm(s)
        return (torch.sigmoid(self.gate_proj(s_bar)) * x_bar + self.shift_proj(s_bar)).to(x.dtype)


class FourierEmbedding(nn.Module):
    """cos(2π(t·frequencies + phases)) of a noise level t (B,) -> (B, embedding_dim); the random frequencies and
    phases are checkpoint buffers, not learned."""

    frequencies: torch.Tensor
    phases: torch.Tensor

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.register_buffer("frequencies", torch.randn(embedding_dim))
        self.register_buffer("phases", torch.randn(embedding_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(2.0 * torch.pi * (t[:, None] * self.frequencies[None, :] + self.phases[None, :]))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), the halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE: q·cos + rotate_half(q)·sin, the same for k. q, k: (B, H, N, D); cos, sin: (B, N, D),
    given a heads axis at ``unsqueeze_dim``."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class RotaryEmbedding(nn.Module):
    """3D RoPE over an atom's reference position (x, y, z: ``num_spatial_rope_pairs_per_axis`` frequency pairs each,
    base ``spatial_rope_base_frequency``) and its space uid (``num_uid_rope_pairs``, base ``uid_rope_base_frequency``);
    the remaining pairs of a head are inactive (frequency 0). No parameters.

    forward(ref_pos (B, N, 3), ref_space_uid (B, N), dtype) -> (cos, sin), each (B, N, head_dim) in ``dtype``.
    """

    def __init__(self, atom_config: AtomEncoderConfig):
        super().__init__()
        self.num_spatial_pairs_per_axis = atom_config.num_spatial_rope_pairs_per_axis
        self.num_uid_pairs = atom_config.num_uid_rope_pairs
        self.spatial_rope_base_frequency = atom_config.spatial_rope_base_frequency
        self.uid_rope_base_frequency = atom_config.uid_rope_base_frequency
        self.num_inactive_channels = (
            atom_config.head_dim // 2 - 3 * self.num_spatial_pairs_per_axis - self.num_uid_pairs
        )

    @staticmethod
    def _inverse_frequencies(base: float, pairs: int, device: torch.device) -> torch.Tensor:
        return 1.0 / (base ** (torch.arange(0, pairs, dtype=torch.float32, device=device) / pairs))

    def forward(
        self, ref_pos: torch.Tensor, ref_space_uid: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = self._inverse_frequencies(
            self.spatial_rope_base_frequency, self.num_spatial_pairs_per_axis, ref_pos.device
        )
        uid = self._inverse_frequencies(self.uid_rope_base_frequency, self.num_uid_pairs, ref_pos.device)
        inv_freq = torch.cat([spatial.repeat(3), uid, spatial.new_zeros(self.num_inactive_channels)])
        uid_channels = self.num_uid_pairs + self.num_inactive_channels
        positions = torch.cat(
            [
                ref_pos.float().repeat_interleave(self.num_spatial_pairs_per_axis, dim=-1),
                ref_space_uid.float().unsqueeze(-1).expand(*ref_space_uid.shape, uid_channels),
            ],
            dim=-1,
        )
        angles = positions * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)
