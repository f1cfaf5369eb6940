"""ESM-2 protein language model (Lin et al. 2023): a pre-LayerNorm transformer encoder with rotary positions.

tokens -> embedding (token dropout rescaling) -> ``num_layers`` x [x + attn(LN(x)); x + FFN(LN(x))]
-> final LayerNorm -> masked-LM head (tied to the embedding) and, from the attention maps, a contact head
(the shared ``EncoderLanguageModel``). Module and parameter names equal fair-esm's, so its state dicts load
unchanged (rotary ``inv_freq`` aside).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
from esmfold_lite.lm.encoder import EncoderLanguageModel, token_dropout


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


class ESM2(EncoderLanguageModel):
    """ESM-2 language model; ``forward`` returns fair-esm's output dict (see ``EncoderLanguageModel.forward``)."""

    def __init__(self, config: ESM2Config, alphabet: Alphabet = ESM_ALPHABET):
        super().__init__(
            config.num_layers,
            config.embed_dim,
            4 * config.embed_dim,
            config.attention_heads,
            alphabet,
            rotary=True,
            lm_head=config.lm_head,
        )
        self.config = config

    def embed_input(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, D)`` with fair-esm's token-dropout rescaling and padded positions zeroed.

        With token dropout, ``<mask>`` embeddings are zeroed and the rest scaled by
        ``(1 - MASK_RATIO_TRAIN) / (1 - observed mask ratio)``, the ratio taken over each sequence's non-pad tokens.
        """
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            x = token_dropout(x, tokens, padding_mask, self.alphabet.mask_idx)
        return x.masked_fill(padding_mask[..., None], 0.0)
