"""ESMFold2's diffusion sampler (AF3 Algorithm 18 with EDM churn): from pure noise at the capped top of a Karras
noise schedule, each step re-centres and randomly rotates and translates the coordinates (Algorithm 19), adds the
churn noise, calls the denoiser, aligns the noisy coordinates onto the denoised ones (Kabsch) and takes an Euler
step towards the next noise level.

The random numbers are drawn in transformers' order (``generation_esmfold2``), so that after the same
``torch.manual_seed`` both samplers draw the same numbers: the initial noise [B*S, A, 3], then per step the
rotation quaternions [B*S, 4], the translations [B*S, 1, 3] and the churn noise [B*S, A, 3] (drawn even when its
scale is 0). Coordinates stay fp32 for the whole loop. (The reference also carries the previous step's denoised
coordinates through the augmentation but never reads them; that draws nothing, so it is left out here.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from esmfold_lite.esmfold2.config import StructureHeadConfig

Denoiser = Callable[[Tensor, Tensor, object], Tensor]


def noise_schedule(config: StructureHeadConfig, num_steps: int | None = None) -> tuple[Tensor, Tensor]:
    """The sigmas sigma_0 > ... > sigma_T = 0 (fp32 [T + 1]) and the churn factors gamma (fp32 [T + 1]).

    Karras: sigma_i = sigma_data * (r_max^(1/p) + i / (n - 1) * (r_min^(1/p) - r_max^(1/p)))^p for n steps, then 0;
    the sigmas above ``inference_sigma_cap`` are dropped and the cap prepended (so the loop may run fewer than n
    steps). gamma_i = gamma_0 where sigma_i > gamma_min, else 0; step i (sigma_i -> sigma_{i+1}) uses gamma_{i+1}.
    """
    sigma_data = config.diffusion_module.sigma_data
    steps = config.inference_num_steps if num_steps is None else int(num_steps)
    if steps == 1:
        sigmas = torch.tensor([config.inference_sigma_max_ratio * sigma_data, 0.0], dtype=torch.float32)
    else:
        inverse = 1.0 / config.inference_exponent
        top, bottom = config.inference_sigma_max_ratio**inverse, config.inference_sigma_min_ratio**inverse
        ramp = torch.arange(steps, dtype=torch.float32)
        sigmas = F.pad(sigma_data * (top + ramp / (steps - 1) * (bottom - top)).pow(config.inference_exponent), (0, 1))
    if config.inference_sigma_cap is not None:
        sigmas = F.pad(sigmas[sigmas <= config.inference_sigma_cap], (1, 0), value=config.inference_sigma_cap)
    gammas = torch.where(sigmas > config.gamma_min, config.gamma_0, 0.0).to(torch.float32)
    return sigmas, gammas


def random_rotations(num: int, device: torch.device | None = None) -> Tensor:
    """``num`` uniformly random rotation matrices [num, 3, 3] (fp32) from normalised Gaussian quaternions
    (w, x, y, z), drawing one ``randn(num, 4)``; the sign is fixed so that w >= 0 (the same rotation either way).

    The matrix is written as the reference writes it, 1 - 2s(y² + z²) on the diagonal with s = 1 / |q|², not as
    ``geometry.rigid.quat_to_rot`` (w² + x² - y² - z²): the two differ by ~1e-7, which three steps of the loop carry
    to ~3e-4 Å, so this form keeps the loop bit-equal to the reference."""
    quats = torch.randn((num, 4), dtype=torch.float32, device=device)
    norm = quats.square().sum(dim=1).sqrt()
    quats = quats / torch.where(quats[:, 0] < 0, -norm, norm)[:, None]
    w, x, y, z = quats.unbind(dim=-1)
    two_s = 2.0 / quats.square().sum(dim=-1)
    rows = (
        (1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w)),
        (two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w)),
        (two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def center_random_augmentation(coords: Tensor, atom_mask: Tensor) -> Tensor:
    """Algorithm 19 on coords [B, A, 3]: subtract the masked centroid (atom_mask [B, A] float), rotate (row
    vectors: ``x @ R``) and translate by a standard normal draw [B, 1, 3]."""
    mask = atom_mask[..., None]
    centroid = (coords * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    rotation = random_rotations(coords.shape[0], coords.device)
    return (coords - centroid) @ rotation + torch.randn_like(coords[:, :1])


def weighted_rigid_align(coords: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``coords`` [B, A, 3] moved by the weighted least-squares rigid transform (Kabsch, no reflection) onto
    ``target`` [B, A, 3]; weights [B, A] (0 at padding)."""
    w = weights[..., None]
    total = w.sum(dim=-2, keepdim=True).clamp(min=1e-8)
    centroid, target_centroid = (coords * w).sum(dim=-2, keepdim=True) / total, (target * w).sum(-2, True) / total
    centered = coords - centroid
    covariance = (w * (target - target_centroid)).transpose(-1, -2) @ centered
    u, _, vh = torch.linalg.svd(covariance, driver="gesvd" if covariance.is_cuda else None)
    ones = torch.ones_like(u[..., 0, 0])
    flip = torch.stack([ones, ones, torch.linalg.det(u @ vh)], dim=-1)
    rotation = u @ torch.diag_embed(flip) @ vh
    return centered @ rotation.transpose(-1, -2) + target_centroid


@torch.no_grad()
def sample_structure(
    denoiser: Denoiser,
    conditioning: object,
    atom_mask: Tensor,
    config: StructureHeadConfig,
    num_steps: int | None = None,
) -> Tensor:
    """Sample atom coordinates [B*S, A, 3] (fp32, Å) for every sample of every item.

    Args:
        denoiser: ``denoiser(noisy_coords [B*S, A, 3], noise_level [B*S] fp32, conditioning)`` -> denoised
            [B*S, A, 3] (``DiffusionModule.forward``).
        conditioning: passed through to every call (``DiffusionModule.prepare(..., num_samples=S)``).
        atom_mask: [B*S, A] valid atoms, samples already expanded item-major (the conditioning's ``atom_mask``).
        config: the structure head's sampler settings (noise schedule, ``noise_scale``, ``step_scale``).
        num_steps: schedule length before the cap; ``config.inference_num_steps`` when None.
    """
    mask = atom_mask.float()
    batch, device = mask.shape[0], mask.device
    sigmas, gammas = noise_schedule(config, num_steps)
    coords = sigmas[0].to(device) * torch.randn(batch, mask.shape[1], 3, device=device, dtype=torch.float32)
    for sigma, sigma_next, gamma in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), gammas[1:].tolist(), strict=True):
        coords = center_random_augmentation(coords, mask)
        noise_level = sigma * (1.0 + gamma)
        churn = config.noise_scale * max(noise_level**2 - sigma**2, 0.0) ** 0.5
        noisy = coords + churn * torch.randn_like(coords)
        denoised = denoiser(noisy, torch.full((batch,), noise_level, device=device, dtype=torch.float32), conditioning)
        noisy = weighted_rigid_align(noisy, denoised, mask)
        coords = noisy + config.step_scale * (sigma_next - noise_level) * ((noisy - denoised) / noise_level)
    return coords
