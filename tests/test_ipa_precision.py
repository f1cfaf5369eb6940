"""Invariant point attention stays exact where it matters at realistic coordinate magnitudes, also under bf16
autocast: 1,000 residues whose centre sits 5 nm from the origin, near pairs a few ångströms apart."""

from __future__ import annotations

import math

import torch
from randomize import randomize_

from esmfold_lite.fold.ipa import InvariantPointAttention, squared_point_distances
from esmfold_lite.geometry.rigid import Rigid, quat_to_rot

LENGTH, HEADS, QK_POINTS, V_POINTS = 1000, 12, 4, 8  # esmfold_v1's IPA: 12 heads, 4 query/key and 8 value points
OFFSET_NM = 5.0


def chain_frames(offset_nm: float, seed: int = 0) -> Rigid:
    """(1, L) backbone frames in nm: a random walk of 0.38 nm steps (Cα–Cα) centred at ``offset_nm`` along x,
    random orientations."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.nn.functional.normalize(torch.randn(LENGTH, 3, generator=g), dim=-1) * 0.38
    trans = steps.cumsum(0)
    trans = trans - trans.mean(0) + torch.tensor([offset_nm, 0.0, 0.0])
    quat = torch.nn.functional.normalize(torch.randn(LENGTH, 4, generator=g), dim=-1)
    return Rigid(quat_to_rot(quat)[None], trans[None])


def points(frames: Rigid, seed: int) -> torch.Tensor:
    """(1, L, H, P, 3) global points within ~1 nm of each residue's frame (as IPA's projections place them)."""
    local = torch.randn(1, LENGTH, HEADS * QK_POINTS, 3, generator=torch.Generator().manual_seed(seed)) * 0.5
    return frames[..., None].apply(local).unflatten(-2, (HEADS, QK_POINTS))


def test_squared_point_distances_are_exact_under_bf16_autocast():
    frames = chain_frames(OFFSET_NM)
    q, k = points(frames, 1), points(frames, 2)
    exact = squared_point_distances(q.double(), k.double())  # (1, H, L, L)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = squared_point_distances(q, k)
        q_flat, k_flat = q.flatten(-2), k.flatten(-2)  # the expansion |q|² + |k|² − 2 q·k, for contrast
        expansion = (
            q_flat.square().sum(-1).transpose(1, 2)[..., None]
            + k_flat.square().sum(-1).transpose(1, 2)[:, :, None, :]
            - 2 * torch.einsum("bihd,bjhd->bhij", q_flat, k_flat)
        )
    assert ours.dtype == torch.float32
    near = exact < 4 * QK_POINTS * 1.0  # pairs whose points are within about 1 nm
    assert near.sum() > 1000
    relative = ((ours.double() - exact).abs() / exact.clamp(min=1e-3))[near]
    assert relative.max() <= 1e-5  # fp32 accuracy, whatever autocast asks for
    # the test is sharp: at these magnitudes the expansion under bf16 is off by whole nm² on near pairs
    assert ((expansion.double() - exact).abs()[near]).max() > 0.5


def test_ipa_under_bf16_autocast_is_invariant_to_a_5_nm_shift():
    """Shifting every frame by 5 nm changes nothing in exact arithmetic; under bf16 autocast the attention logits
    still see fp32 distances, so the output changes only where fp32 rounding of the coordinates tips a feature over
    a bf16 rounding boundary before ``linear_out``: in about 1% of the values, by a bf16 step. That is a hundred
    times less, on average, than bf16 autocast itself changes the output. (With the distances expanded in bf16,
    logit errors of order 1 would change the attention itself.)"""
    c_s, c_z = 64, 8
    ipa = randomize_(InvariantPointAttention(c_s, c_z, 16, HEADS, QK_POINTS, V_POINTS), seed=3).eval()
    g = torch.Generator().manual_seed(4)
    s = torch.randn(1, LENGTH, c_s, generator=g)
    z = torch.randn(1, LENGTH, LENGTH, c_z, generator=g)
    mask = torch.ones(1, LENGTH)
    centred, shifted = chain_frames(0.0), chain_frames(OFFSET_NM)
    with torch.no_grad():
        fp32 = ipa(s, z, centred, mask, chunk_size=125)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_centred = ipa(s, z, centred, mask, chunk_size=125).float()
            out_shifted = ipa(s, z, shifted, mask, chunk_size=125).float()
    assert math.isfinite(out_centred.abs().max().item())
    shift_effect = (out_shifted - out_centred).abs()
    bf16_effect = (out_centred - fp32).abs()
    assert shift_effect.max() <= 2**-6 * out_centred.abs().max()  # a bf16 step of the largest values
    assert shift_effect.mean() <= 0.01 * bf16_effect.mean()
