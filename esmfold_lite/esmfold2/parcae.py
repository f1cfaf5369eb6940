"""Parcae, ESMFold2's recycling recurrence (transformers' ``EsmFold2Parcae``): a diagonal linear state-space update
whose time axis is the trunk loop, not the sequence.

    Δ = softplus(log_delta);  Ā = exp(−Δ ⊙ exp(log_state_decay))  (per channel);  B̄ = Δ[:, None] ⊙ input_matrix
    state ← Ā ⊙ state + B̄ · input_norm(injected)         every loop, injected = the pair input (+ the refined LM pair)
    output = output_stack(out_proj(state))               once, after the last loop (the "coda")

(input_matrix = the parameter ``input_matrix_continuous``.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import LayerNorm
from esmfold_lite.esmfold2.pair_stack import PairUpdateStack


class Parcae(nn.Module):
    """The loop recurrence over pair states (B, L, L, c_z) and its coda of ``parcae_num_coda_layers`` pair blocks."""

    def __init__(self, config: EsmFold2Config):
        super().__init__()
        c_z = config.pairwise_hidden_size
        self.input_norm = LayerNorm(c_z)
        # The reference's initialisation: identity maps and a per-loop decay of exactly 1/sqrt(5)
        delta = 0.5 * math.log(5.0)
        self.log_state_decay = nn.Parameter(torch.zeros(c_z))
        self.log_delta = nn.Parameter(torch.full((c_z,), delta + math.log(-math.expm1(-delta))))  # softplus⁻¹(Δ)
        self.input_matrix_continuous = nn.Parameter(torch.eye(c_z))
        self.out_proj = nn.Linear(c_z, c_z, bias=False)
        nn.init.eye_(self.out_proj.weight)
        self.output_stack = PairUpdateStack(config, config.parcae_num_coda_layers)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ā (c_z,), B̄ (c_z, c_z)): loop-invariant, computed once per fold."""
        delta = F.softplus(self.log_delta)
        return torch.exp(-delta * torch.exp(self.log_state_decay)), delta[:, None] * self.input_matrix_continuous

    def forward(
        self, state: torch.Tensor, injected: torch.Tensor, state_decay: torch.Tensor, input_matrix: torch.Tensor
    ) -> torch.Tensor:
        """One loop: Ā ⊙ state + B̄ · input_norm(injected); all (B, L, L, c_z) but Ā (c_z,), B̄ (c_z, c_z)."""
        return state_decay * state + F.linear(self.input_norm(injected), input_matrix)

    def decode_state(self, state: torch.Tensor, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pair representation of the final state: output_stack(out_proj(state)), (B, L, L, c_z)."""
        return self.output_stack(self.out_proj(state), pair_mask)
