"""ESM-2 protein language model (Lin et al. 2023): a pre-LayerNorm transformer encoder with rotary positions.

tokens -> embedding (token dropout rescaling) -> ``num_layers`` x [x + attn(LN(x)); x + FFN(LN(x))]
-> final LayerNorm -> masked-LM head (tied to the embedding) and, from the attention maps, a contact head.
Module and parameter names equal fair-esm's, so its state dicts load unchanged (rotary ``inv_freq`` aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
from esmfold_lite.lm.contact_head import ContactPredictionHead
from esmfold_lite.lm.embed import Embeddings, embed, resolve_layer
from esmfold_lite.lm.self_attention import SelfAttention

MASK_RATIO_TRAIN = 0.15 * 0.8
"""Fraction of tokens replaced by ``<mask>`` during ESM-2 training (15 % selected, 80 % of those masked)."""


@dataclass
class ESM2Config:
    """ESM-2 sizes; the feed-forward width is ``4 * embed_dim``.

    ``lm_head`` is False for the LM inside a transformers ESMFold checkpoint, which is saved without its
    masked-LM head (the folding model never reads logits).
    """

    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool = True
    lm_head: bool = True


ESM2_ARCHITECTURES: dict[str, ESM2Config] = {
    "esm2_t6_8M_UR50D": ESM2Config(num_layers=6, embed_dim=320, attention_heads=20),
    "esm2_t12_35M_UR50D": ESM2Config(num_layers=12, embed_dim=480, attention_heads=20),
    "esm2_t30_150M_UR50D": ESM2Config(num_layers=30, embed_dim=640, attention_heads=20),
    "esm2_t33_650M_UR50D": ESM2Config(num_layers=33, embed_dim=1280, attention_heads=20),
    "esm2_t36_3B_UR50D": ESM2Config(num_layers=36, embed_dim=2560, attention_heads=40),
    "esm2_t48_15B_UR50D": ESM2Config(num_layers=48, embed_dim=5120, attention_heads=40),
}
"""The official ESM-2 checkpoints' sizes, by checkpoint name."""


class TransformerLayer(nn.Module):
    """One pre-LayerNorm block: ``x + attn(LN(x))`` then ``x + fc2(gelu(fc1(LN(x))))``."""

    def __init__(self, embed_dim: int, ffn_dim: int, attention_heads: int):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: (B, T, D)``, ``padding_mask: (B, T)`` bool -> ``(B, T, D)`` and ``(B, H, T, T)`` weights or None."""
        update, weights = self.self_attn(self.self_attn_layer_norm(x), padding_mask, need_weights)
        x = x + update
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        return x, weights


class LMHead(nn.Module):
    """Masked-LM head: dense -> gelu -> LayerNorm -> projection on the (tied) token embedding + bias."""

    def __init__(self, embed_dim: int, weight: nn.Parameter):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> logits ``(B, T, V)``."""
        return F.linear(self.layer_norm(F.gelu(self.dense(x))), self.weight) + self.bias


class ESM2(nn.Module):
    """ESM-2 language model; ``forward`` returns fair-esm's output dict."""

    def __init__(self, config: ESM2Config, alphabet: Alphabet = ESM_ALPHABET):
        super().__init__()
        self.config = config
        self.alphabet = alphabet
        self.num_layers = config.num_layers
        self.embed_dim = config.embed_dim
        self.attention_heads = config.attention_heads
        self.embed_tokens = nn.Embedding(len(alphabet), config.embed_dim, padding_idx=alphabet.padding_idx)
        self.layers = nn.ModuleList(
            TransformerLayer(config.embed_dim, 4 * config.embed_dim, config.attention_heads)
            for _ in range(config.num_layers)
        )
        self.contact_head = ContactPredictionHead(
            config.num_layers * config.attention_heads,
            eos_idx=alphabet.eos_idx,
            prepend_bos=alphabet.prepend_bos,
            append_eos=alphabet.append_eos,
        )
        self.emb_layer_norm_after = nn.LayerNorm(config.embed_dim)
        self.lm_head = LMHead(config.embed_dim, self.embed_tokens.weight) if config.lm_head else None

    def embed_input(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, D)`` with fair-esm's token-dropout rescaling and padded positions zeroed.

        With token dropout, ``<mask>`` embeddings are zeroed and the rest scaled by
        ``(1 - MASK_RATIO_TRAIN) / (1 - observed mask ratio)``, the ratio taken over each sequence's non-pad tokens.
        """
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            is_mask = tokens.eq(self.alphabet.mask_idx)
            x = x.masked_fill(is_mask[..., None], 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / (~padding_mask).sum(-1)
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
        return x.masked_fill(padding_mask[..., None], 0.0)

    def forward(
        self,
        tokens: torch.Tensor,
        repr_layers: Sequence[int] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
    ) -> dict:
        """Run the model on a token batch.

        Args:
            tokens: ``(B, T)`` long, ``<cls> ... <eos>`` right-padded with ``<pad>`` (``Alphabet.batch_encode``).
            repr_layers: layers whose hidden states to return: 0 = embeddings, ``num_layers`` = after the final
                LayerNorm, negative values count from the end. Output keys are the values as given.
            need_head_weights: also return every head's attention probabilities.
            return_contacts: also return contact probabilities (implies ``need_head_weights``).

        Returns:
            ``"logits"``: ``(B, T, V)`` (when the model has an LM head); ``"representations"``:
            ``{layer: (B, T, D)}``; with head weights ``"attentions"``: ``(B, num_layers, H, T, T)`` (zero on
            padded rows/columns); with contacts ``"contacts"``: ``(B, T - 2, T - 2)``.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        need_head_weights = need_head_weights or return_contacts
        wanted: dict[int, list[int]] = {}
        for layer in repr_layers:
            wanted.setdefault(resolve_layer(layer, self.num_layers), []).append(layer)

        padding_mask = tokens.eq(self.alphabet.padding_idx)
        x = self.embed_input(tokens, padding_mask)
        attn_padding = padding_mask if padding_mask.any() else None

        hidden = {0: x} if 0 in wanted else {}
        attentions = []
        for index, layer in enumerate(self.layers, start=1):
            x, weights = layer(x, attn_padding, need_head_weights)
            if index in wanted and index < self.num_layers:
                hidden[index] = x
            if need_head_weights:
                attentions.append(weights)
        x = self.emb_layer_norm_after(x)
        hidden[self.num_layers] = x

        result: dict = {"representations": {key: hidden[index] for index, keys in wanted.items() for key in keys}}
        if self.lm_head is not None:
            result["logits"] = self.lm_head(x)
        if need_head_weights:
            stacked = torch.stack(attentions, dim=1)  # (B, layers, H, T, T)
            if attn_padding is not None:
                keep = (~attn_padding).to(stacked.dtype)
                stacked = stacked * (keep[:, :, None] * keep[:, None, :])[:, None, None]
            result["attentions"] = stacked
            if return_contacts:
                result["contacts"] = self.contact_head(tokens, stacked)
        return result

    def predict_contacts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Contact probabilities ``(B, T - 2, T - 2)`` for a token batch ``(B, T)``."""
        return self(tokens, return_contacts=True)["contacts"]

    def embed(
        self,
        sequences: str | Sequence[str],
        layers: Sequence[int] = (-1,),
        contacts: bool = False,
        max_tokens_per_batch: int | None = None,
        progress: bool = False,
    ) -> Embeddings:
        """Per-residue, mean and ``<cls>`` embeddings of raw sequences; see ``esmfold_lite.lm.embed.embed``."""
        return embed(
            self,
            sequences,
            layers=layers,
            contacts=contacts,
            max_tokens_per_batch=max_tokens_per_batch,
            progress=progress,
        )
