"""ESM C (ESM Cambrian; EvolutionaryScale 2024), ESM-2's successor for sequence representations.

A pre-LayerNorm transformer encoder with rotary positions, like ESM-2, but:

* attention: LayerNorm -> one bias-free ``qkv`` projection -> LayerNorm (scale only) over the full width of the
  queries and of the keys ("QK layernorm") -> rotary -> softmax attention -> bias-free output projection;
* feed-forward: LayerNorm -> SwiGLU (``w_out(silu(gate) * up)``, both halves from one bias-free ``w_in``) whose
  width is ``8/3 * embed_dim`` rounded up to a multiple of 256;
* residual updates divided by ``sqrt(num_layers / 36)``;
* a final LayerNorm (scale only), then a sequence head ``Linear -> GELU -> LayerNorm -> Linear`` to 64 logits
  (the tokenizer uses the first 33; see ``esmfold_lite.alphabet.ESMC_ALPHABET``); the ESM C inside ESMFold2
  (transformers' ``EsmcModel``) has none (``ESMCConfig.lm_head`` False);
* chain-aware attention when asked (``forward(sequence_id=...)``, as transformers' ``EsmcModel``): a token attends
  only to the tokens of its own chain, while the rotary positions keep running across chains;
* no token dropout, no learned positions (no length limit) and no contact head.

``forward`` and ``embed`` follow ESM-2's interface (``EncoderLanguageModel``), so ``esmfold_lite.lm.embed`` and
``esmfold_lite.score_variants`` use ESM C unchanged. Parameter names are esmfold_lite's own;
``esmfold_lite.weights.esmc_format`` maps the official file's names to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from esmfold_lite.alphabet import ESMC_ALPHABET, Alphabet
from esmfold_lite.lm.embed import Embeddings, embed, requested_layers
from esmfold_lite.lm.layer_stack import run_layers, zero_padded
from esmfold_lite.lm.rotary import RotaryEmbedding

ESMC_HEAD_DIM = 64
"""Width of one attention head in every released ESM C (960 / 15, 1152 / 18)."""
RESIDUE_SCALE_LAYERS = 36
"""Residual updates are divided by ``sqrt(num_layers / RESIDUE_SCALE_LAYERS)``."""


def swiglu_width(embed_dim: int) -> int:
    """ESM C's feed-forward width: ``8/3 * embed_dim`` rounded up to a multiple of 256 (960 -> 2560, 1152 -> 3072)."""
    return int((embed_dim * 8 / 3 + 255) // 256 * 256)


def no_contacts_error(model: nn.Module) -> ValueError:
    return ValueError(
        f"{type(model).__name__} (ESM C) has no contact head: EvolutionaryScale released ESM C without contact "
        "prediction weights. Use an ESM-2 model (e.g. esm2_t33_650M_UR50D) for contacts"
    )


@dataclass
class ESMCConfig:
    """ESM C sizes.

    Attributes:
        num_layers, embed_dim, attention_heads: the transformer's depth, width and heads.
        vocab_size: rows of the token embedding and outputs of the sequence head (64 in the released models).
        ffn_dim: the SwiGLU width; None: ``swiglu_width(embed_dim)``.
        lm_head: whether the model has its sequence head; False for the ESM C inside a transformers ESMFold2
            checkpoint (``EsmcModel``, saved without one: the folding model reads hidden states only).
    """

    num_layers: int
    embed_dim: int
    attention_heads: int
    vocab_size: int = 64
    ffn_dim: int | None = None
    lm_head: bool = True

    def __post_init__(self) -> None:
        if self.ffn_dim is None:
            self.ffn_dim = swiglu_width(self.embed_dim)
        if self.embed_dim % self.attention_heads or (self.embed_dim // self.attention_heads) % 2:
            raise ValueError(
                f"embed_dim {self.embed_dim} must split into {self.attention_heads} heads of an even width"
            )


ESMC_ARCHITECTURES: dict[str, ESMCConfig] = {
    "esmc_300m": ESMCConfig(num_layers=30, embed_dim=960, attention_heads=15),
    "esmc_600m": ESMCConfig(num_layers=36, embed_dim=1152, attention_heads=18),
}
"""The released ESM C models' sizes, by registry name."""


class ESMCAttention(nn.Module):
    """Pre-LN multi-head self-attention with QK layernorm and rotary positions (no biases but the first LN's)."""

    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(embed_dim)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_norm = nn.LayerNorm(embed_dim, bias=False)
        self.k_norm = nn.LayerNorm(embed_dim, bias=False)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.rotary = RotaryEmbedding(embed_dim // heads)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: (B, T, D)``, ``attend: (B, 1, T, T)`` bool (which keys each query sees; None: all) -> the update
        ``(B, T, D)`` and, with ``need_weights``, the attention probabilities ``(B, H, T, T)``."""
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=self.heads) for t in (q, k, v))
        q, k = self.rotary(q, k)
        weights = None
        if need_weights:
            scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
            if attend is not None:
                scores = scores.masked_fill(~attend, float("-inf"))
            weights = scores.softmax(dim=-1)
            context = torch.einsum("bhqk,bhkd->bhqd", weights, v)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        return self.out_proj(rearrange(context, "b h t d -> b t (h d)")), weights


class SwiGLUFeedForward(nn.Module):
    """LayerNorm -> ``w_out(silu(gate) * up)`` with ``(gate, up) = w_in(x)`` split in halves; bias-free linears."""

    def __init__(self, embed_dim: int, ffn_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.w_in = nn.Linear(embed_dim, 2 * ffn_dim, bias=False)
        self.w_out = nn.Linear(ffn_dim, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(..., D)``."""
        gate, up = self.w_in(self.norm(x)).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


class ESMCBlock(nn.Module):
    """``x + attn(x) / s`` then ``x + ffn(x) / s``, with ``s = sqrt(num_layers / 36)`` (each sub-layer normalises
    its own input)."""

    def __init__(self, config: ESMCConfig):
        super().__init__()
        self.attention = ESMCAttention(config.embed_dim, config.attention_heads)
        self.ffn = SwiGLUFeedForward(config.embed_dim, config.ffn_dim)
        self.residue_scale = math.sqrt(config.num_layers / RESIDUE_SCALE_LAYERS)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: (B, T, D)`` -> ``(B, T, D)`` and ``(B, H, T, T)`` weights or None (see ``ESMCAttention``)."""
        update, weights = self.attention(x, attend, need_weights)
        x = x + update / self.residue_scale
        x = x + self.ffn(x) / self.residue_scale
        return x, weights


class SequenceHead(nn.Module):
    """ESM C's sequence head: dense -> GELU -> LayerNorm -> output projection with bias, to ``vocab_size`` logits."""

    def __init__(self, embed_dim: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.output = nn.Linear(embed_dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> logits ``(..., V)``."""
        return self.output(self.layer_norm(F.gelu(self.dense(x))))


class ESMC(nn.Module):
    """ESM C language model with ESM-2's ``forward``/``embed`` interface.

    Attributes:
        alphabet: ``ESMC_ALPHABET`` (33 tokens; the logits have ``config.vocab_size`` = 64 columns, of which the
            31 past the alphabet are never produced by the tokenizer).
        takes_msa: False (one sequence per batch row).
        max_residues: None: rotary positions; the ``esm`` package sets no length limit either.
    """

    takes_msa: ClassVar[bool] = False
    max_residues: int | None = None

    def __init__(self, config: ESMCConfig, alphabet: Alphabet = ESMC_ALPHABET):
        super().__init__()
        if len(alphabet) > config.vocab_size:
            raise ValueError(f"an alphabet of {len(alphabet)} tokens does not fit vocab_size {config.vocab_size}")
        self.config = config
        self.alphabet = alphabet
        self.num_layers = config.num_layers
        self.embed_dim = config.embed_dim
        self.attention_heads = config.attention_heads
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embed_dim)
        self.layers = nn.ModuleList(ESMCBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.embed_dim, bias=False)
        self.lm_head = SequenceHead(config.embed_dim, config.vocab_size) if config.lm_head else None

    def forward(
        self,
        tokens: torch.Tensor,
        repr_layers: Sequence[int] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
        sequence_id: torch.Tensor | None = None,
    ) -> dict:
        """Run the model on a token batch.

        Args:
            tokens: ``(B, T)`` long, ``<cls> ... <eos>`` right-padded with ``<pad>`` (``Alphabet.batch_encode``).
                A token attends to the tokens on its side of the padding: residues to residues, pads to pads.
            repr_layers: layers whose hidden states to return: 0 = token embeddings, ``1 .. num_layers - 1`` = the
                blocks' outputs, ``num_layers`` = the last block's output after the final LayerNorm (what the
                ``esm`` package calls ``embeddings``); negative values count from the end. Keys as given.
            need_head_weights: also return every head's attention probabilities.
            return_contacts: not supported: ESM C has no contact head (raises ``ValueError``).
            sequence_id: ``(B, T)`` long chain ids for chain-aware attention (transformers' ``EsmcModel``
                ``sequence_id``): a token attends to the tokens of the same id only; padding gets -1 (pads attend to
                pads). None: by padding, as above. The rotary positions are those of the whole row either way.

        Returns:
            ``"logits"``: ``(B, T, vocab_size)`` (absent without a sequence head, ``config.lm_head`` False);
            ``"representations"``: ``{layer: (B, T, D)}``; with head weights
            ``"attentions"``: ``(B, num_layers, H, T, T)`` (zero on padded rows/columns).
        """
        if return_contacts:
            raise no_contacts_error(self)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        if sequence_id is not None and sequence_id.shape != tokens.shape:
            raise ValueError(
                f"sequence_id {tuple(sequence_id.shape)} must have the shape of tokens {tuple(tokens.shape)}"
            )
        wanted = requested_layers(repr_layers, self.num_layers)
        keep = tokens.ne(self.alphabet.padding_idx)  # (B, T)
        groups = keep if sequence_id is None else sequence_id  # tokens attend within their group
        one_group = (groups == groups[:, :1]).all()
        attend = None if one_group else (groups[:, :, None] == groups[:, None, :])[:, None]  # (B, 1, T, T)

        x = self.embed_tokens(tokens)
        out = run_layers(
            self.layers, x, self.final_norm, wanted, attend, need_head_weights, keep_maps=need_head_weights
        )
        result: dict = {"representations": out.representations}
        if self.lm_head is not None:
            result["logits"] = self.lm_head(out.last)
        if need_head_weights:
            padding_mask = None if keep.all() else ~keep
            result["attentions"] = zero_padded(out.maps[0], padding_mask)  # (B, layers, H, T, T)
        return result

    def predict_contacts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Not supported: ESM C has no contact head (raises ``ValueError``)."""
        raise no_contacts_error(self)

    def embed(
        self,
        sequences: str | Sequence[str],
        layers: Sequence[int] = (-1,),
        contacts: bool = False,
        logits: bool = False,
        max_tokens_per_batch: int | None = None,
        progress: bool = False,
    ) -> Embeddings:
        """Per-residue, mean and ``<cls>`` embeddings of raw sequences; see ``esmfold_lite.lm.embed.embed``
        (``contacts=True`` raises: ESM C has no contact head)."""
        if contacts:
            raise no_contacts_error(self)
        return embed(
            self,
            sequences,
            layers=layers,
            logits=logits,
            max_tokens_per_batch=max_tokens_per_batch,
            progress=progress,
        )
