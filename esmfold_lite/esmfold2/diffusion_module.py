"""The denoiser (AF3's DiffusionModule with EDM preconditioning): noisy atom coordinates at noise level sigma, with
the trunk's conditioning, -> denoised coordinates.

``prepare`` builds, once per fold, everything that depends on neither sigma nor the coordinates (atom embedding and
RoPE, the pair biases, the projected single inputs), expanded over the diffusion samples; ``forward`` is one
denoiser call:

    x_in = x_noisy / sqrt(sigma^2 + sigma_data^2)
    update = decoder(token transformer(encoder(x_in) + single), ...)
    x_denoised = sigma_data^2 / (sigma_data^2 + sigma^2) * x_noisy + sigma_data * sigma / sqrt(...) * update
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from esmfold_lite.esmfold2.atom_transformer import AtomDecoder, AtomEncoder, AtomInputs
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.diffusion_conditioning import DiffusionConditioning
from esmfold_lite.esmfold2.diffusion_transformer import DiffusionTransformer
from esmfold_lite.esmfold2.layers import LayerNorm


@dataclass
class DenoiserConditioning:
    """What every denoising step of a fold reuses, at batch B * samples (the biases at B when B is 1: they
    broadcast). atom_embeds: [B*S, A, C_atom]; rotary: (cos, sin) [B*S, A, head_dim]; atom_mask, atom_to_token:
    [B*S, A]; single: [B*S, N, C] projected single inputs; pair_biases: per layer [B*S or 1, H, N, N]."""

    atom_embeds: Tensor
    rotary: tuple[Tensor, Tensor]
    atom_mask: Tensor
    atom_to_token: Tensor
    single: Tensor
    pair_biases: list[Tensor]


class DiffusionModule(nn.Module):
    """Conditioning, coordinate embedding, atom encoder, token transformer, atom decoder (transformers'
    ``EsmFold2DiffusionModule``, same parameter names)."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        diffusion = config.structure_head.diffusion_module
        self.sigma_data = diffusion.sigma_data
        self.conditioning = DiffusionConditioning(config)
        self.coords_linear = nn.Linear(6, diffusion.atom_encoder.hidden_size, bias=False)
        self.atom_encoder = AtomEncoder(config, diffusion.atom_encoder)
        self.atom_decoder = AtomDecoder(config)
        self.single_to_token = nn.Linear(diffusion.hidden_size, diffusion.hidden_size, bias=False)
        self.token_transformer = DiffusionTransformer(config)
        self.single_step_norm = LayerNorm(diffusion.hidden_size)
        self.token_norm = LayerNorm(diffusion.hidden_size)

    def prepare(
        self,
        atoms: AtomInputs,
        pair_trunk: Tensor,
        relative_position: Tensor,
        single_inputs: Tensor,
        token_mask: Tensor | None = None,
        num_samples: int = 1,
    ) -> DenoiserConditioning:
        """The step-invariant conditioning of a fold. atoms: [B, A, ...]; pair_trunk, relative_position:
        [B, N, N, c_z]; single_inputs: [B, N, single_inputs_size]; token_mask: [B, N] bool. Every sample of an
        item gets the same rows (``repeat_interleave``: item-major, as the reference)."""
        embeds, (cos, sin) = self.atom_encoder.embed_atoms(atoms)
        biases = self.token_transformer.pair_biases(self.conditioning.pair(pair_trunk, relative_position), token_mask)
        if single_inputs.shape[0] != 1:
            biases = [bias.repeat_interleave(num_samples, 0) for bias in biases]

        def expand(t: Tensor) -> Tensor:
            return t.repeat_interleave(num_samples, 0)

        return DenoiserConditioning(
            atom_embeds=expand(embeds),
            rotary=(expand(cos), expand(sin)),
            atom_mask=expand(atoms.atom_attention_mask.bool()),
            atom_to_token=expand(atoms.atom_to_token),
            # projected after expanding, as the reference (a Linear's sums may group differently per batch size)
            single=self.conditioning.project_single(expand(single_inputs)),
            pair_biases=biases,
        )

    def forward(self, noisy_coords: Tensor, noise_level: Tensor, cond: DenoiserConditioning) -> Tensor:
        """noisy_coords: [B*S, A, 3]; noise_level: [B*S] sigma (fp32); cond: from ``prepare``. Returns the denoised
        coordinates [B*S, A, 3]."""
        sigma, sigma_data = noise_level[:, None, None], self.sigma_data
        single = self.conditioning(noise_level, cond.single)

        scaled = noisy_coords / torch.sqrt(sigma * sigma + sigma_data * sigma_data)
        coords_in = torch.cat([scaled, torch.zeros_like(scaled)], dim=-1)  # the second coordinate slot is unused
        atom_states = cond.atom_embeds + self.coords_linear(coords_in.to(self.coords_linear.weight.dtype))
        tokens, atom_states = self.atom_encoder(
            atom_states, cond.atom_embeds, cond.atom_mask, cond.rotary, cond.atom_to_token, single.shape[1]
        )
        tokens = tokens + self.single_to_token(self.single_step_norm(single))
        tokens = self.token_norm(self.token_transformer(tokens, single, cond.pair_biases))
        update = self.atom_decoder(
            tokens, atom_states, cond.atom_embeds, cond.atom_mask, cond.rotary, cond.atom_to_token
        )

        variance = sigma_data * sigma_data + sigma * sigma
        return sigma_data * sigma_data / variance * noisy_coords + sigma_data * sigma / torch.sqrt(variance) * update
