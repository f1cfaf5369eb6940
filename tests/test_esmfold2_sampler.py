"""ESMFold2's diffusion sampler equals transformers' (``generation_esmfold2``) after the same ``torch.manual_seed``:
the noise schedule, the random rotations, and the whole sampling loop.

The reference loop is entered at its narrowest point, ``EsmFold2Model._sample_structure``, on a tiny
``EsmFold2Model`` (structure head randomized as in ``test_esmfold2_diffusion``, sdpa attention) with given trunk
outputs (random pair, relative-position and single tensors) and atom features of two small proteins padded into a
batch; ours is ``DiffusionModule.prepare`` + ``sample_structure`` with the structure head's state dict loaded
strictly. Coordinates are compared at valid atoms (the padding atoms happen to agree too, but nothing reads them)
and are bit-equal: the denoiser against the sdpa reference is bit-equal (``test_esmfold2_diffusion``), and every
sampler operation is done as and in the order the reference does it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from esmfold2_reference import FEATURE_OVERRIDES as OVERRIDES
from esmfold2_reference import featurised, randomized, tiny_reference_config

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.diffusion_module import DiffusionModule
from esmfold_lite.esmfold2.sampler import noise_schedule, random_rotations, sample_structure

modeling = pytest.importorskip("transformers.models.esmfold2.modeling_esmfold2")
generation = pytest.importorskip("transformers.models.esmfold2.generation_esmfold2")

TOL = dict(atol=0, rtol=0)
# churn noise on (the default noise_scale is 0) and a step scale off 1, to exercise every term of the update
CHURN = dict(noise_scale=1.003, step_scale=1.5)


@pytest.fixture(scope="module")
def models() -> tuple[object, DiffusionModule, EsmFold2Config]:
    ref_config = tiny_reference_config(**OVERRIDES)
    ref_config._attn_implementation = "sdpa"
    reference = modeling.EsmFold2Model(ref_config).eval()
    randomized(reference.structure_head, seed=11)
    config = EsmFold2Config.from_dict(ref_config.to_dict())
    ours = DiffusionModule(config).eval()
    ours.load_state_dict(reference.structure_head.state_dict(), strict=True)
    return reference, ours, config


@pytest.mark.parametrize("num_steps", [1, 2, 3, 68, 200])
@pytest.mark.parametrize("cap", [256.0, 30.0, None])
def test_noise_schedule(models, num_steps, cap):
    reference, _, config = models
    head = dataclasses.replace(config.structure_head, inference_sigma_cap=cap)
    saved = reference.config.structure_head.inference_sigma_cap
    reference.config.structure_head.inference_sigma_cap = cap
    try:
        expected = reference._build_noise_schedule(num_steps, torch.device("cpu"))
    finally:
        reference.config.structure_head.inference_sigma_cap = saved
    for got, want in zip(noise_schedule(head, num_steps), expected, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_random_rotations():
    torch.manual_seed(5)
    expected = generation._random_rotations(64, torch.float32, torch.device("cpu"))
    after_ref = torch.rand(3)
    torch.manual_seed(5)
    got = random_rotations(64)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    torch.testing.assert_close(torch.rand(3), after_ref, atol=0, rtol=0)  # the same numbers drawn
    torch.testing.assert_close(got @ got.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(got), torch.ones(64), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "num_samples, num_steps, settings",
    [(1, 2, {}), (2, 3, {}), (2, 3, CHURN), (1, 1, CHURN), (2, None, {})],
)
def test_sampling_loop(models, num_samples, num_steps, settings):
    """Same seed, same coordinates; ``None`` steps: the config's default schedule, cut short here by a small
    ``inference_num_steps`` of 4 (its cap leaves 4 steps), to check the default is read from the config."""
    reference, ours, config = models
    settings = dict(settings, inference_num_steps=4) if num_steps is None else settings
    ref_atoms, atoms, token_mask = featurised(reference.config)
    batch, num_tokens = token_mask.shape
    generator = torch.Generator().manual_seed(12)
    pair_trunk, relpos = torch.randn(2, batch, num_tokens, num_tokens, 16, generator=generator)
    single_inputs = torch.randn(batch, num_tokens, 91, generator=generator)
    saved = {name: getattr(reference.config.structure_head, name) for name in settings}
    for name, value in settings.items():
        setattr(reference.config.structure_head, name, value)
    try:
        torch.manual_seed(2026)
        with torch.no_grad():
            expected = reference._sample_structure(
                pair_trunk, single_inputs, relpos, ref_atoms, token_mask, num_samples, num_steps
            )
    finally:
        for name, value in saved.items():
            setattr(reference.config.structure_head, name, value)
    torch.manual_seed(2026)
    with torch.no_grad():
        cond = ours.prepare(atoms, pair_trunk, relpos, single_inputs, token_mask, num_samples)
        got = sample_structure(
            ours, cond, cond.atom_mask, dataclasses.replace(config.structure_head, **settings), num_steps
        )
    mask = cond.atom_mask
    assert got.shape == expected.shape == (batch * num_samples, atoms.ref_pos.shape[1], 3)
    torch.testing.assert_close(got[mask], expected[mask], **TOL)
    assert expected[mask].abs().max() > 1.0  # not collapsed to the origin
