"""ESM-1b (Rives et al. 2021) and ESM-1v (Meier et al. 2021, the same architecture trained on UniRef90).

tokens -> token embedding (+ token-dropout rescaling when trained with it) + learned positions (fairseq's padding
offset) -> ``emb_layer_norm_before`` -> ``num_layers`` pre-LN blocks without rotary embeddings
-> ``emb_layer_norm_after`` -> masked-LM head tied to the token embedding, and the contact head.
Module and parameter names equal fair-esm's ``ProteinBertModel``, so its state dicts load unchanged.

Length limit: the learned positions cover ``max_positions`` = 1,024 tokens, i.e. 1,022 residues between
``<cls>`` and ``<eos>``. A longer sequence raises ``ValueError`` (no silent truncation, no windowing): split it into
windows yourself, or use ESM-2, whose rotary positions have no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
from esmfold_lite.lm.encoder import EncoderLanguageModel, token_dropout
from esmfold_lite.lm.learned_positions import LearnedPositionalEmbedding


@dataclass
class ESM1Config:
    """ESM-1b / ESM-1v sizes (fair-esm's ``args`` without the ``encoder_`` prefix).

    ``emb_layer_norm_before``: a LayerNorm on the input vectors (present in the released ESM-1b/1v files).
    ``token_dropout``: rescale the input embedding for ``<mask>`` tokens as in training (fair-esm reads it from
    ``args.token_dropout``, default False).
    """

    num_layers: int
    embed_dim: int
    ffn_embed_dim: int
    attention_heads: int
    max_positions: int = 1024
    emb_layer_norm_before: bool = True
    token_dropout: bool = False


ESM1B_T33 = ESM1Config(num_layers=33, embed_dim=1280, ffn_embed_dim=5120, attention_heads=20)
"""The size of ``esm1b_t33_650M_UR50S`` and the five ``esm1v_t33_650M_UR90S_*`` models."""


class ESM1(EncoderLanguageModel):
    """ESM-1b / ESM-1v language model; ``forward`` returns fair-esm's output dict (``EncoderLanguageModel.forward``).

    Raises ``ValueError`` for a sequence longer than ``max_residues`` (1,022 for the released models).
    """

    def __init__(self, config: ESM1Config, alphabet: Alphabet = ESM_ALPHABET):
        super().__init__(
            config.num_layers,
            config.embed_dim,
            config.ffn_embed_dim,
            config.attention_heads,
            alphabet,
            rotary=False,
        )
        self.config = config
        self.embed_positions = LearnedPositionalEmbedding(config.max_positions, config.embed_dim, alphabet.padding_idx)
        self.emb_layer_norm_before = nn.LayerNorm(config.embed_dim) if config.emb_layer_norm_before else None
        self.max_residues = config.max_positions - int(alphabet.prepend_bos) - int(alphabet.append_eos)

    def embed_input(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings ``(B, T, D)``, normalised by ``emb_layer_norm_before``, zero at padding."""
        if tokens.shape[-1] > self.embed_positions.max_positions:
            longest = int((~padding_mask).sum(-1).max()) - (self.config.max_positions - self.max_residues)
            raise ValueError(
                f"a sequence of {longest} residues is longer than the {self.max_residues} residues "
                f"{type(self).__name__}'s learned positions cover ({self.embed_positions.max_positions} tokens with "
                "<cls> and <eos>); split it into windows of at most that length, or use ESM-2 (no length limit)"
            )
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            x = token_dropout(x, tokens, padding_mask, self.alphabet.mask_idx)
        x = x + self.embed_positions(tokens)
        if self.emb_layer_norm_before is not None:
            x = self.emb_layer_norm_before(x)
        return x.masked_fill(padding_mask[..., None], 0.0)
