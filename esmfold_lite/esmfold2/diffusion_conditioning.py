"""The denoiser's conditioning (AF3's DiffusionConditioning): the pair conditioning from the trunk's pair
representation and the relative-position encoding, and the single conditioning from the single inputs plus a
Fourier embedding of the noise level ``0.25 * log(sigma / sigma_data)``.

Only the noise term varies per denoising step: the pair half (``pair``) and the projected single inputs
(``project_single``) are built once per fold; ``forward`` adds the noise embedding and runs the transitions. The
pair transitions go ``chunk_size`` rows at a time (the reference runs them whole: the same numbers, a fraction of
the [N, N, pair_intermediate_size] activation at once).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import FourierEmbedding, LayerNorm, Transition


class DiffusionConditioning(nn.Module):
    """Pair: LayerNorm(concat(z_trunk, relpos)) -> linear to c_z -> two transitions. Single: LayerNorm -> linear to
    the token width, + projected Fourier noise embedding -> two transitions."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        diffusion = config.structure_head.diffusion_module
        c_z, width = config.pairwise_hidden_size, diffusion.hidden_size
        self.sigma_data = diffusion.sigma_data
        self.pair_input_norm = LayerNorm(2 * c_z)
        self.pair_proj = nn.Linear(2 * c_z, c_z, bias=False)
        self.pair_transition_0 = Transition(c_z, diffusion.pair_intermediate_size, config.chunk_size)
        self.pair_transition_1 = Transition(c_z, diffusion.pair_intermediate_size, config.chunk_size)
        self.single_input_norm = LayerNorm(config.single_inputs_size)
        self.single_proj = nn.Linear(config.single_inputs_size, width, bias=False)
        self.fourier = FourierEmbedding(diffusion.fourier_dim)
        self.noise_norm = LayerNorm(diffusion.fourier_dim)
        self.noise_proj = nn.Linear(diffusion.fourier_dim, width, bias=False)
        self.single_transition_0 = Transition(width, diffusion.intermediate_size, chunk_size=None)
        self.single_transition_1 = Transition(width, diffusion.intermediate_size, chunk_size=None)

    def pair(self, pair_trunk: Tensor, relative_position: Tensor) -> Tensor:
        """The pair conditioning [B, N, N, c_z] from the trunk's pair [B, N, N, c_z] and the relative-position
        encoding [B, N, N, c_z]. Noise-independent."""
        z = self.pair_input_norm(torch.cat([pair_trunk, relative_position], dim=-1))
        z = self.pair_proj(z.to(self.pair_proj.weight.dtype))
        return self.pair_transition_1(self.pair_transition_0(z))

    def project_single(self, single_inputs: Tensor) -> Tensor:
        """The single inputs [B, N, single_inputs_size] at the token width [B, N, C]. Noise-independent."""
        return self.single_proj(self.single_input_norm(single_inputs))

    def forward(self, noise_level: Tensor, single: Tensor) -> Tensor:
        """noise_level: [B] sigma (fp32); single: [B, N, C] from ``project_single``. Returns the single conditioning
        [B, N, C]."""
        log_noise = 0.25 * torch.log((noise_level / self.sigma_data).clamp(min=1e-20))
        noise = self.noise_proj(self.noise_norm(self.fourier(log_noise)).to(self.noise_proj.weight.dtype))
        return self.single_transition_1(self.single_transition_0(single + noise[:, None]))
