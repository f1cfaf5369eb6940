"""ESM C hidden states -> the LM pair representation (transformers' ``EsmFold2LanguageModelEncoder``).

    h_ℓ = pair_proj(pair_input_norm(H_ℓ))          per layer ℓ = 0..n of ESM C (embeddings + n layers), (B, L, c_z)
    s = Σ_ℓ softmax(layer_weights)_ℓ h_ℓ          (B, L, c_z)
    z_ij = pair_output_norm(SingleToPair(s)_ij)    (B, L, L, c_z)

``SingleToPair``: d = downproject(s); z_ij = output_fc2(gelu(output_fc1([d_i ⊙ d_j, d_i − d_j]))). Rows i of the pair
are built ``chunk_size`` at a time, so the (L, L, 2·c_z) input exists one chunk of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import LayerNorm
from esmfold_lite.fold.chunking import chunk_apply


class SingleToPair(nn.Module):
    """Outer product and difference of a projected single representation, then a two-layer GELU MLP, at c_z."""

    def __init__(self, config: EsmFold2Config):
        super().__init__()
        c_z = config.pairwise_hidden_size
        self.downproject = nn.Linear(c_z, c_z)
        self.output_fc1 = nn.Linear(2 * c_z, c_z)
        self.output_fc2 = nn.Linear(c_z, c_z)

    def forward(
        self, s: torch.Tensor, chunk_size: int | None = None, post: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """s: (B, L, c_z) -> (B, L, L, c_z), built ``chunk_size`` rows at a time; ``post`` (e.g. a norm) is applied
        to each chunk of rows as it is made."""
        d = self.downproject(s)

        def rows(d_rows: torch.Tensor) -> torch.Tensor:
            d_i, d_j = d_rows.unsqueeze(2), d.unsqueeze(1)
            z = self.output_fc2(F.gelu(self.output_fc1(torch.cat([d_i * d_j, d_i - d_j], dim=-1))))
            return z if post is None else post(z)

        return chunk_apply(rows, (d,), (1,), chunk_size, out_dim=1)


class LanguageModelEncoder(nn.Module):
    """A learned mixture of ESM C's hidden states (``layer_weights``, one per state), lifted to a pair."""

    def __init__(self, config: EsmFold2Config):
        super().__init__()
        lm, c_z = config.esmc_config, config.pairwise_hidden_size
        self.single_to_pair = SingleToPair(config)
        self.pair_output_norm = LayerNorm(c_z)
        self.pair_input_norm = LayerNorm(lm.hidden_size)
        self.pair_proj = nn.Linear(lm.hidden_size, c_z, bias=False)
        self.layer_weights = nn.Parameter(torch.zeros(lm.num_hidden_layers + 1))
        self.chunk_size = config.chunk_size or None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: (B, L, n + 1, lm_hidden_size), ESM C's embeddings and every layer's output per token.
        Returns the LM pair representation (B, L, L, c_z) in ``pair_proj``'s dtype."""
        h = self.pair_proj(self.pair_input_norm(hidden_states.to(self.pair_proj.weight.dtype)))  # (B, L, n + 1, c_z)
        s = torch.einsum("n,blnc->blc", self.layer_weights.softmax(0), h)
        return self.single_to_pair(s, self.chunk_size, post=self.pair_output_norm)
