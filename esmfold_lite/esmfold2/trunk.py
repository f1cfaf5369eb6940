"""ESMFold2's pair trunk: the loops over the pair representation, the parcae coda and the distogram head (the trunk
half of transformers' ``EsmFold2Model.forward``, after the input embedder and ESM C).

    z_lm = language_model(ESM C states)                                   once
    state = truncated normal, std sqrt(2 / (5·c_z)), cut at ±3 std        once (a random draw)
    repeat num_loops + 1 times:
        lm = lm_encoder(dropout(z_lm))       dropout p = lm_dropout, resampled every loop, at inference too (as the
                                             reference does, when per_loop_lm_dropout; none otherwise)
        state = folding_trunk(parcae(state, z_init + lm))
    z = parcae.decode_state(state);   distogram = distogram_head(z + zᵀ)

The random draws (the initial state, then one dropout mask per loop) come from torch's global generator in the
reference's order, so after the same ``torch.manual_seed`` the trunk gives the reference's numbers. No MSA: the
MSA encoder (absent from ESMFold2-Fast) is not run. The submodules keep the reference model's top-level names, so
their keys are those of its state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.lm_encoder import LanguageModelEncoder
from esmfold_lite.esmfold2.pair_stack import PairUpdateStack
from esmfold_lite.esmfold2.parcae import Parcae


@dataclass
class TrunkOutput:
    """pair_states: (B, L, L, c_z) fp32, the trunk's final pair representation; distogram_logits: (B, L, L, bins)."""

    pair_states: torch.Tensor
    distogram_logits: torch.Tensor


def initial_state(like: torch.Tensor) -> torch.Tensor:
    """The loops' first state, drawn as the reference draws it: trunc. normal N(0, 2 / (5·c_z)) cut at ±3 std
    ("SmallInit"), in fp32 then cast to ``like``'s dtype. like: (..., c_z)."""
    std = math.sqrt(2.0 / (5.0 * like.shape[-1]))
    state = torch.empty_like(like, dtype=torch.float32)
    nn.init.trunc_normal_(state, mean=0.0, std=std, a=-3 * std, b=3 * std)
    return state.to(like.dtype)


class PairTrunk(nn.Module):
    """The looping pair trunk. Submodules (state-dict prefixes): ``language_model``, ``lm_encoder``,
    ``folding_trunk``, ``parcae``, ``distogram_head``."""

    def __init__(self, config: EsmFold2Config):
        super().__init__()
        self.config = config
        self.language_model = LanguageModelEncoder(config)
        self.folding_trunk = PairUpdateStack(config, config.folding_trunk_num_hidden_layers)
        self.lm_encoder = PairUpdateStack(config, config.lm_encoder.num_hidden_layers)
        self.parcae = Parcae(config)
        self.distogram_head = nn.Linear(
            config.pairwise_hidden_size, config.structure_head.num_distogram_bins, dtype=torch.float32
        )

    def forward(
        self,
        initial_pair_states: torch.Tensor,
        attention_mask: torch.Tensor,
        lm_hidden_states: torch.Tensor | None = None,
        num_loops: int | None = None,
    ) -> TrunkOutput:
        """Args:
        initial_pair_states: (B, L, L, c_z), the input embedder's pair representation (injected every loop).
        attention_mask: (B, L), 1 for a token, 0 for right padding.
        lm_hidden_states: (B, L, n + 1, lm_hidden_size), ESM C's states per token (None: no LM term).
        num_loops: refinement loops (``config.num_loops`` if None); the trunk runs num_loops + 1 times (at least 1).
        """
        num_loops = self.config.num_loops if num_loops is None else num_loops
        lm_pair = None if lm_hidden_states is None else self.language_model(lm_hidden_states)
        mask = attention_mask.float()
        pair_mask = mask[:, :, None] * mask[:, None, :]
        state = initial_state(initial_pair_states)
        state_decay, input_matrix = self.parcae.discretize()
        state_decay, input_matrix = state_decay.to(state.dtype), input_matrix.to(state.dtype)
        for _ in range(max(1, num_loops + 1)):
            state = self._loop(state, initial_pair_states, lm_pair, pair_mask, state_decay, input_matrix)
        z = self.parcae.decode_state(state, pair_mask).float()
        logits = self.distogram_head((z + z.transpose(1, 2)).to(self.distogram_head.weight.dtype))
        return TrunkOutput(pair_states=z, distogram_logits=logits)

    def _loop(
        self,
        state: torch.Tensor,
        initial_pair_states: torch.Tensor,
        lm_pair: torch.Tensor | None,
        pair_mask: torch.Tensor,
        state_decay: torch.Tensor,
        input_matrix: torch.Tensor,
    ) -> torch.Tensor:
        """One loop: the refined (dropped-out) LM pair added to the pair input, injected by parcae, then the folding
        trunk. All pair tensors (B, L, L, c_z); the stacks update their (fresh) inputs in place."""
        injected = initial_pair_states
        if lm_pair is not None:
            settings = self.config.lm_encoder
            if settings.per_loop_lm_dropout and settings.lm_dropout > 0.0:
                dropped = F.dropout(lm_pair, p=settings.lm_dropout, training=True)  # a fresh tensor
            else:
                dropped = lm_pair.clone()  # the stack updates its input in place; lm_pair serves every loop
            injected = injected + self.lm_encoder(dropped, pair_mask)
        return self.folding_trunk(self.parcae(state, injected, state_decay, input_matrix), pair_mask)
