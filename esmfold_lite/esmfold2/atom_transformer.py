"""The sliding-window atom transformer (AF3's atom attention, with 3D RoPE instead of pair biases): the atom encoder
(atom features -> atom states -> per-token mean) used by the input embedder and the denoiser, and the denoiser's
atom decoder (token states -> atom states -> coordinate update).

Each atom attends to the atoms within ``sliding_window // 2`` positions of it in the flat atom order (padding keys
masked). The reference builds that window as a dense ``[atoms, atoms]`` mask; here the queries go in blocks against
only the keys their window reaches, the same softmax over the same keys with memory linear in the atom count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esmfold_lite.esmfold2.config import AtomEncoderConfig, EsmFold2Config
from esmfold_lite.esmfold2.layers import LayerNorm, RMSNorm, RotaryEmbedding, SwiGLU, apply_rotary_pos_emb

QUERY_BLOCK = 256
"""Atom queries per attention block: the scores held at once are ``[batch, heads, 256, 256 + sliding_window]``."""


@dataclass
class AtomInputs:
    """Reference-conformer atom features of a batch, encoded (one-hots, padding zeroed), as the atom stack reads them
    (transformers' ``EsmFold2AtomInputs`` after ``_prepare_features``).

    ref_pos: [B, A, 3] conformer coordinates; ref_charge: [B, A] formal charge; atom_attention_mask: [B, A] valid
    atoms (bool); ref_element: [B, A, max_atomic_number] one-hot; ref_atom_name_chars: [B, A, max_chars,
    char_vocab_size] one-hot; ref_space_uid: [B, A] group id (the token index); atom_to_token: [B, A] long, 0 at
    padding.
    """

    ref_pos: Tensor
    ref_charge: Tensor
    atom_attention_mask: Tensor
    ref_element: Tensor
    ref_atom_name_chars: Tensor
    ref_space_uid: Tensor
    atom_to_token: Tensor


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, radius: int) -> Tensor:
    """Softmax attention of each position over the valid keys within ``radius`` of it.

    q, k, v: [B, H, A, D]; key_mask: [B, A] bool (a batch of 1 broadcasts). Returns [B, H, A, D]; a query with no
    valid key in reach gets zeros."""
    num_atoms = q.shape[2]
    position = torch.arange(num_atoms, device=q.device)
    blocks = []
    for start in range(0, num_atoms, QUERY_BLOCK):
        end = min(start + QUERY_BLOCK, num_atoms)
        key_start, key_end = max(0, start - radius), min(num_atoms, end + radius)
        in_window = (position[start:end, None] - position[None, key_start:key_end]).abs() <= radius
        mask = in_window & key_mask[:, None, None, key_start:key_end]
        keys, values = k[:, :, key_start:key_end], v[:, :, key_start:key_end]
        blocks.append(F.scaled_dot_product_attention(q[:, :, start:end], keys, values, attn_mask=mask))
    return torch.nan_to_num(torch.cat(blocks, dim=2))


class AtomAttention(nn.Module):
    """Sliding-window self-attention over atoms: QK RMS-norm (weightless), 3D RoPE, a sigmoid output gate."""

    def __init__(self, atom_config: AtomEncoderConfig, radius: int) -> None:
        super().__init__()
        width = atom_config.hidden_size
        self.head_dim = atom_config.head_dim
        self.radius = radius
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.gate_proj = nn.Linear(width, width, bias=False)
        self.q_norm = RMSNorm()
        self.k_norm = RMSNorm()

    def forward(self, x: Tensor, atom_mask: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """x: [B, A, C]; atom_mask: [B, A] bool; rotary: (cos, sin), each [B, A, head_dim]. Returns [B, A, C]."""
        heads = (*x.shape[:-1], -1, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(heads).transpose(1, 2))
        k = self.k_norm(self.k_proj(x).view(heads).transpose(1, 2))
        v = self.v_proj(x).view(heads).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rotary)
        out = sliding_window_attention(q, k, v, atom_mask, self.radius).transpose(1, 2).reshape(x.shape)
        return self.o_proj(out * torch.sigmoid(self.gate_proj(x)))


class AtomLayer(nn.Module):
    """One atom block: adaLN-Zero modulation from ``adaln_linear(silu(conditioning))`` (shift, scale, gate for the
    attention and for the SwiGLU feed-forward) around RMS-normed inputs."""

    def __init__(self, atom_config: AtomEncoderConfig, radius: int) -> None:
        super().__init__()
        width = atom_config.hidden_size
        self.adaln_linear = nn.Linear(width, 6 * width, bias=False)
        self.self_attn = AtomAttention(atom_config, radius)
        self.mlp = SwiGLU(width, atom_config.intermediate_size)
        self.input_layernorm = RMSNorm()
        self.post_attention_layernorm = RMSNorm()

    def forward(self, x: Tensor, conditioning: Tensor, atom_mask: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """x, conditioning: [B, A, C]; atom_mask: [B, A] bool; rotary: (cos, sin) [B, A, head_dim]. Returns
        [B, A, C]."""
        modulation = self.adaln_linear(F.silu(conditioning))
        attn_shift, attn_scale, attn_gate, mlp_shift, mlp_scale, mlp_gate = modulation.chunk(6, dim=-1)
        attn_in = self.input_layernorm(x) * (1 + attn_scale) + attn_shift
        x = x + attn_gate * self.self_attn(attn_in, atom_mask, rotary)
        mlp_in = self.post_attention_layernorm(x) * (1 + mlp_scale) + mlp_shift
        return x + mlp_gate * self.mlp(mlp_in)


def scatter_atom_to_token(atom_features: Tensor, atom_to_token: Tensor, num_tokens: int, atom_mask: Tensor) -> Tensor:
    """Mean of each token's valid atoms: [B, A, C] -> [B, num_tokens, C] (zeros for a token without atoms).

    atom_to_token: [B, A] long; atom_mask: [B, A] bool (padding atoms go to a spare slot that is dropped)."""
    batch, _, width = atom_features.shape
    index = torch.where(atom_mask, atom_to_token, num_tokens)
    tokens = atom_features.new_zeros(batch, num_tokens + 1, width)
    tokens.scatter_reduce_(1, index[..., None].expand_as(atom_features), atom_features, "mean", include_self=False)
    return tokens[:, :num_tokens]


def gather_token_to_atom(token_features: Tensor, atom_to_token: Tensor) -> Tensor:
    """Each atom's token row: [B, N, C] with atom_to_token [B, A] -> [B, A, C]."""
    return torch.gather(token_features, 1, atom_to_token[..., None].expand(-1, -1, token_features.shape[-1]))


class AtomEncoder(nn.Module):
    """Atom features -> per-atom embedding (and its 3D RoPE) -> atom layers -> relu projection, averaged per token."""

    def __init__(self, config: EsmFold2Config, atom_config: AtomEncoderConfig) -> None:
        super().__init__()
        radius = config.sliding_window // 2
        self.atom_linear = nn.Linear(config.atom_feature_dim, atom_config.hidden_size, bias=False)
        self.atom_norm = LayerNorm(atom_config.hidden_size)
        self.rotary_emb = RotaryEmbedding(atom_config)
        self.layers = nn.ModuleList([AtomLayer(atom_config, radius) for _ in range(atom_config.num_hidden_layers)])
        self.atom_to_token_linear = nn.Linear(atom_config.hidden_size, atom_config.output_dim, bias=False)

    def embed_atoms(self, atoms: AtomInputs) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The per-atom embedding [B, A, C] (xyz, charge, mask, element and name one-hots -> linear -> LayerNorm) and
        the RoPE (cos, sin), each [B, A, head_dim], from conformer position and space uid. Noise-independent."""
        batch, num_atoms = atoms.ref_pos.shape[:2]
        features = torch.cat(
            [
                atoms.ref_pos,
                atoms.ref_charge[..., None],
                atoms.atom_attention_mask[..., None],
                atoms.ref_element,
                atoms.ref_atom_name_chars.reshape(batch, num_atoms, -1),
            ],
            dim=-1,
        )
        embeds = self.atom_norm(self.atom_linear(features.to(self.atom_linear.weight.dtype)))
        return embeds, self.rotary_emb(atoms.ref_pos, atoms.ref_space_uid, dtype=embeds.dtype)

    def forward(
        self,
        x: Tensor,
        conditioning: Tensor,
        atom_mask: Tensor,
        rotary: tuple[Tensor, Tensor],
        atom_to_token: Tensor,
        num_tokens: int,
    ) -> tuple[Tensor, Tensor]:
        """x: [B, A, C] atom states (the embedding itself, or the denoiser's embedding + coordinates); conditioning:
        [B, A, C] the embedding; atom_mask [B, A] bool; rotary (cos, sin) [B, A, head_dim]; atom_to_token [B, A].
        Returns (token states [B, num_tokens, output_dim], atom states [B, A, C])."""
        for layer in self.layers:
            x = layer(x, conditioning, atom_mask, rotary)
        tokens = scatter_atom_to_token(F.relu(self.atom_to_token_linear(x)), atom_to_token, num_tokens, atom_mask)
        return tokens, x


class AtomDecoder(nn.Module):
    """The denoiser's way back: token states broadcast to their atoms, added to the encoder's atom states, atom
    layers, LayerNorm, a linear to the (x, y, z) update."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        diffusion = config.structure_head.diffusion_module
        atom_config = diffusion.atom_encoder
        radius = config.sliding_window // 2
        self.token_to_atom_linear = nn.Linear(diffusion.hidden_size, atom_config.hidden_size, bias=False)
        self.layers = nn.ModuleList([AtomLayer(atom_config, radius) for _ in range(atom_config.num_hidden_layers)])
        self.norm = LayerNorm(atom_config.hidden_size)
        self.output_linear = nn.Linear(atom_config.hidden_size, 3, bias=False)

    def forward(
        self,
        tokens: Tensor,
        x: Tensor,
        conditioning: Tensor,
        atom_mask: Tensor,
        rotary: tuple[Tensor, Tensor],
        atom_to_token: Tensor,
    ) -> Tensor:
        """tokens: [B, N, c_token]; x: [B, A, C] the encoder's atom states; conditioning: [B, A, C]; atom_mask,
        atom_to_token: [B, A]; rotary (cos, sin) [B, A, head_dim]. Returns the coordinate update [B, A, 3]."""
        x = x + gather_token_to_atom(self.token_to_atom_linear(tokens), atom_to_token)
        for layer in self.layers:
            x = layer(x, conditioning, atom_mask, rotary)
        return self.output_linear(self.norm(x))
