"""The single-sequence encoder shared by ESM-1b/ESM-1v and ESM-2 (a RoBERTa-style masked language model).

tokens -> ``embed_input`` (defined by each model: token embedding, positions, token-dropout rescaling)
-> ``num_layers`` x [x + attn(LN(x)); x + FFN(LN(x))] -> final LayerNorm ``emb_layer_norm_after``
-> masked-LM head (tied to the token embedding) and, from the attention maps, a contact head (Rao et al. 2021).
Module and parameter names equal fair-esm's, so its state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.alphabet import Alphabet
from esmfold_lite.lm.contact_head import ContactPredictionHead, check_contact_regression
from esmfold_lite.lm.embed import Embeddings, embed, requested_layers
from esmfold_lite.lm.layer_stack import run_layers, zero_padded
from esmfold_lite.lm.self_attention import SelfAttention

MASK_RATIO_TRAIN = 0.15 * 0.8
"""Fraction of tokens replaced by ``<mask>`` during training (15 % selected, 80 % of those masked)."""


def token_dropout(x: torch.Tensor, tokens: torch.Tensor, padding_mask: torch.Tensor, mask_idx: int) -> torch.Tensor:
    """fair-esm's token dropout at inference: ``<mask>`` embeddings zeroed, the rest scaled.

    ``x: (B, T, D)`` is multiplied by ``(1 - MASK_RATIO_TRAIN) / (1 - observed mask ratio)``, the ratio taken over
    each sequence's non-pad tokens (``tokens``, ``padding_mask``: ``(B, T)``).
    """
    is_mask = tokens.eq(mask_idx)
    x = x.masked_fill(is_mask[..., None], 0.0)
    observed = is_mask.sum(-1).to(x.dtype) / (~padding_mask).sum(-1)
    return x * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]


class TransformerLayer(nn.Module):
    """One pre-LayerNorm block: ``x + attn(LN(x))`` then ``x + fc2(gelu(fc1(LN(x))))``."""

    def __init__(self, embed_dim: int, ffn_dim: int, attention_heads: int, rotary: bool = True):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, attention_heads, rotary=rotary)
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
        """``(..., D)`` -> logits ``(..., V)``."""
        return F.linear(self.layer_norm(F.gelu(self.dense(x))), self.weight) + self.bias


class EncoderLanguageModel(nn.Module):
    """Embedding (``embed_input``, per model) -> pre-LN layers -> LM head and contact head; fair-esm's output dict.

    Attributes:
        takes_msa: False: the input is one sequence per batch row (the MSA Transformer sets it True).
        max_residues: the longest sequence the model's positions cover, or None when unlimited.
    """

    takes_msa: ClassVar[bool] = False
    max_residues: int | None = None

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        ffn_dim: int,
        attention_heads: int,
        alphabet: Alphabet,
        rotary: bool,
        lm_head: bool = True,
    ):
        super().__init__()
        self.alphabet = alphabet
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.attention_heads = attention_heads
        self.embed_tokens = nn.Embedding(len(alphabet), embed_dim, padding_idx=alphabet.padding_idx)
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, ffn_dim, attention_heads, rotary=rotary) for _ in range(num_layers)
        )
        self.contact_head = ContactPredictionHead(
            num_layers * attention_heads,
            eos_idx=alphabet.eos_idx,
            prepend_bos=alphabet.prepend_bos,
            append_eos=alphabet.append_eos,
        )
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim)
        self.lm_head = LMHead(embed_dim, self.embed_tokens.weight) if lm_head else None

    def embed_input(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Input vectors ``(B, T, D)`` of a token batch ``(B, T)``, zero at padded positions."""
        raise NotImplementedError

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
            return_contacts: also return contact probabilities (implies ``need_head_weights``); raises
                ``ValueError`` when the model was loaded without its contact regression weights
                (``contact_head.has_regression``: ESM-1v, or a ``.pt`` without its ``-contact-regression.pt``).

        Returns:
            ``"logits"``: ``(B, T, V)`` (when the model has an LM head); ``"representations"``:
            ``{layer: (B, T, D)}``; with head weights ``"attentions"``: ``(B, num_layers, H, T, T)`` (zero on
            padded rows/columns); with contacts ``"contacts"``: ``(B, T - 2, T - 2)``.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        if return_contacts:
            check_contact_regression(self)
        need_head_weights = need_head_weights or return_contacts
        wanted = requested_layers(repr_layers, self.num_layers)

        padding_mask = tokens.eq(self.alphabet.padding_idx)
        x = self.embed_input(tokens, padding_mask)
        attn_padding = padding_mask if padding_mask.any() else None

        out = run_layers(
            self.layers,
            x,
            self.emb_layer_norm_after,
            wanted,
            attn_padding,
            need_head_weights,
            keep_maps=need_head_weights,
        )
        result: dict = {"representations": out.representations}
        if self.lm_head is not None:
            result["logits"] = self.lm_head(out.last)
        if need_head_weights:
            result["attentions"] = zero_padded(out.maps[0], attn_padding)  # (B, layers, H, T, T)
            if return_contacts:
                result["contacts"] = self.contact_head(tokens, result["attentions"])
        return result

    def predict_contacts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Contact probabilities ``(B, T - 2, T - 2)`` for a token batch ``(B, T)``."""
        return self(tokens, return_contacts=True)["contacts"]

    def embed(
        self,
        sequences: str | Sequence[str],
        layers: Sequence[int] = (-1,),
        contacts: bool = False,
        logits: bool = False,
        max_tokens_per_batch: int | None = None,
        progress: bool = False,
    ) -> Embeddings:
        """Per-residue, mean and ``<cls>`` embeddings of raw sequences; see ``esmfold_lite.lm.embed.embed``.

        ``contacts=True`` raises ``ValueError`` before any forward pass when the model was loaded without its contact
        regression weights (``contact_head.has_regression``).
        """
        return embed(
            self,
            sequences,
            layers=layers,
            contacts=contacts,
            logits=logits,
            max_tokens_per_batch=max_tokens_per_batch,
            progress=progress,
        )
