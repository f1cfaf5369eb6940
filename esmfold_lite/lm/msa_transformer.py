"""MSA Transformer (ESM-MSA-1b; Rao et al. 2021): a language model over a multiple sequence alignment.

tokens ``(B, R, C)`` (R aligned rows, query first, each ``<cls>`` + residues, no ``<eos>``) -> token embedding +
learned column positions (padding offset) + learned MSA row positions ``msa_position_embedding`` ->
``emb_layer_norm_before`` -> ``num_layers`` axial blocks [x + tied row attention(LN(x)); x + column attention(LN(x));
x + FFN(LN(x))] -> ``emb_layer_norm_after`` -> masked-LM head tied to the token embedding; contacts from the tied row
attention maps. Module and parameter names equal fair-esm's ``MSATransformer`` (whose released file swaps the row and
column attention names; ``weights.esm1_format`` swaps them back).

Limits: at most ``max_positions`` = 1,024 tokens per row (1,023 alignment columns after ``<cls>``) and 1,024 rows
(the MSA positions); a larger input raises ``ValueError``. Choose rows with ``esmfold_lite.io.msa.select_rows``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH
from esmfold_lite.lm.axial_attention import ColumnSelfAttention, RowSelfAttention
from esmfold_lite.lm.contact_head import ContactPredictionHead, check_contact_regression
from esmfold_lite.lm.embed import Embeddings, embed, requested_layers
from esmfold_lite.lm.encoder import LMHead
from esmfold_lite.lm.layer_stack import run_layers
from esmfold_lite.lm.learned_positions import LearnedPositionalEmbedding

MSA_ALPHABET = Alphabet(tokens=ESM_ALPHABET.tokens, prepend_bos=True, append_eos=False)
"""fair-esm's ``msa_transformer`` alphabet: the ESM-1b tokens, ``<cls>`` before every row, no ``<eos>``."""
MAX_MSA_ROWS = 1024
"""Rows the released model's ``msa_position_embedding`` covers."""


@dataclass
class MSATransformerConfig:
    """MSA Transformer sizes (fair-esm's ``args`` without the ``encoder_`` prefix).

    ``msa_position_dim``: width of the learned row positions (``embed_dim`` for ESM-MSA-1b; None: no row positions,
    as in the first release's ``embed_positions_msa=False``). ``max_tokens_per_msa``: the column attention runs in
    chunks of at most this many MSA tokens (memory only; results are the same).
    """

    num_layers: int = 12
    embed_dim: int = 768
    ffn_embed_dim: int = 3072
    attention_heads: int = 12
    max_positions: int = 1024
    msa_position_dim: int | None = 768
    max_tokens_per_msa: int = 2**14


class NormalizedResidualBlock(nn.Module):
    """``x + layer(LN(x))`` (pre-LN residual); extra outputs of ``layer`` (attention maps) are passed through."""

    def __init__(self, layer: nn.Module, embed_dim: int):
        super().__init__()
        self.layer = layer
        self.layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.layer(self.layer_norm(x), *args)
        update, extra = out if isinstance(out, tuple) else (out, None)
        return x + update, extra


class FeedForwardNetwork(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, embed_dim: int, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class AxialTransformerLayer(nn.Module):
    """Tied row attention, then column attention, then the feed-forward network, each a pre-LN residual block."""

    def __init__(self, embed_dim: int, ffn_dim: int, attention_heads: int, max_tokens_per_msa: int):
        super().__init__()
        self.row_self_attention = NormalizedResidualBlock(RowSelfAttention(embed_dim, attention_heads), embed_dim)
        column = ColumnSelfAttention(embed_dim, attention_heads, max_tokens_per_msa)
        self.column_self_attention = NormalizedResidualBlock(column, embed_dim)
        self.feed_forward_layer = NormalizedResidualBlock(FeedForwardNetwork(embed_dim, ffn_dim), embed_dim)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: (B, R, C, D)`` -> ``(B, R, C, D)``, row attention ``(B, H, C, C)``, column ``(B, H, C, R, R)``."""
        x, row_attention = self.row_self_attention(x, padding_mask)
        x, column_attention = self.column_self_attention(x, padding_mask)
        x, _ = self.feed_forward_layer(x)
        return x, row_attention, column_attention


class MSATransformer(nn.Module):
    """MSA Transformer; ``forward`` returns fair-esm's output dict, ``embed`` the query row's embeddings.

    Attributes:
        max_residues: widest alignment (columns) the learned positions cover (1,023 for the released model).
        max_rows: deepest MSA the row positions cover (1,024), or None without row positions.
    """

    takes_msa: ClassVar[bool] = True

    def __init__(self, config: MSATransformerConfig, alphabet: Alphabet = MSA_ALPHABET):
        super().__init__()
        self.config = config
        self.alphabet = alphabet
        self.num_layers = config.num_layers
        self.embed_dim = config.embed_dim
        self.attention_heads = config.attention_heads
        self.max_residues = config.max_positions - int(alphabet.prepend_bos) - int(alphabet.append_eos)
        self.max_rows = MAX_MSA_ROWS if config.msa_position_dim is not None else None
        self.embed_tokens = nn.Embedding(len(alphabet), config.embed_dim, padding_idx=alphabet.padding_idx)
        if config.msa_position_dim is None:
            self.register_parameter("msa_position_embedding", None)
        else:
            self.msa_position_embedding = nn.Parameter(torch.zeros(1, MAX_MSA_ROWS, 1, config.msa_position_dim))
        self.layers = nn.ModuleList(
            AxialTransformerLayer(config.embed_dim, config.ffn_embed_dim, config.attention_heads,
                                  config.max_tokens_per_msa)
            for _ in range(config.num_layers)
        )  # fmt: skip
        self.contact_head = ContactPredictionHead(
            config.num_layers * config.attention_heads,
            eos_idx=alphabet.eos_idx,
            prepend_bos=alphabet.prepend_bos,
            append_eos=alphabet.append_eos,
        )
        self.embed_positions = LearnedPositionalEmbedding(config.max_positions, config.embed_dim, alphabet.padding_idx)
        self.emb_layer_norm_before = nn.LayerNorm(config.embed_dim)
        self.emb_layer_norm_after = nn.LayerNorm(config.embed_dim)
        self.lm_head = LMHead(config.embed_dim, self.embed_tokens.weight)

    def embed_input(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Token + column + row position embeddings, normalised, zero at padding: ``(B, R, C)`` -> ``(B, R, C, D)``."""
        rows, columns = tokens.shape[1], tokens.shape[2]
        if columns > self.config.max_positions:
            raise ValueError(
                f"an MSA of {columns - int(self.alphabet.prepend_bos)} columns is wider than the {self.max_residues} "
                "the MSA Transformer's learned positions cover; cut the alignment into windows of at most that width"
            )
        if self.max_rows is not None and rows > self.max_rows:
            raise ValueError(
                f"an MSA of {rows} rows is deeper than the {self.max_rows} rows the MSA Transformer's row positions "
                "cover; select fewer rows (esmfold_lite.io.msa.select_rows)"
            )
        x = self.embed_tokens(tokens) + self.embed_positions(tokens)
        if self.msa_position_embedding is not None:
            x = x + self.msa_position_embedding[:, :rows]
        x = self.emb_layer_norm_before(x)
        return x.masked_fill(padding_mask[..., None], 0.0)

    def forward(
        self,
        tokens: torch.Tensor,
        repr_layers: Sequence[int] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
    ) -> dict:
        """Run the model on a batch of MSAs.

        Args:
            tokens: ``(B, R, C)`` long: row ``r`` of MSA ``b`` is ``<cls>`` + aligned residues, padded with ``<pad>``
                to the widest MSA and with whole ``<pad>`` rows to the deepest (as fair-esm's batch converter does).
            repr_layers, need_head_weights, return_contacts: as in ``EncoderLanguageModel.forward``.

        Returns:
            ``"logits"``: ``(B, R, C, V)``; ``"representations"``: ``{layer: (B, R, C, D)}``; with head weights
            ``"row_attentions"``: ``(B, num_layers, H, C, C)`` and ``"col_attentions"``:
            ``(B, num_layers, H, C, R, R)``; with contacts ``"contacts"``: ``(B, C - 1, C - 1)``.
            As in fair-esm, row attention is scaled by the padded depth R, so MSAs of different depth are not
            independent in one batch (``embed`` runs one MSA per forward pass); padding columns only is exact.
        """
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be (B, R, C) for the MSA Transformer, got shape {tuple(tokens.shape)}")
        if return_contacts:
            check_contact_regression(self)
        need_head_weights = need_head_weights or return_contacts
        wanted = requested_layers(repr_layers, self.num_layers)

        padding_mask = tokens.eq(self.alphabet.padding_idx)
        x = self.embed_input(tokens, padding_mask)
        attn_padding = padding_mask if padding_mask.any() else None

        out = run_layers(self.layers, x, self.emb_layer_norm_after, wanted, attn_padding, keep_maps=need_head_weights)
        result: dict = {"logits": self.lm_head(out.last), "representations": out.representations}
        if need_head_weights:
            result["row_attentions"], result["col_attentions"] = out.maps
            if return_contacts:
                result["contacts"] = self.contact_head(tokens, result["row_attentions"])
        return result

    def predict_contacts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Contact probabilities ``(B, C - 1, C - 1)`` for an MSA token batch ``(B, R, C)``."""
        return self(tokens, return_contacts=True)["contacts"]

    def embed(
        self,
        msas,
        layers: Sequence[int] = (-1,),
        contacts: bool = False,
        logits: bool = False,
        max_depth: int | None = DEFAULT_MAX_DEPTH,
        selection: str = "diverse",
        progress: bool = False,
    ) -> Embeddings:
        """The query rows' embeddings of MSAs (paths or lists of aligned rows); see ``esmfold_lite.lm.embed.embed``.

        ``contacts=True`` raises ``ValueError`` before any forward pass when the model was loaded without its contact
        regression weights.
        """
        return embed(
            self,
            msas,
            layers=layers,
            contacts=contacts,
            logits=logits,
            max_depth=max_depth,
            selection=selection,
            progress=progress,
        )
