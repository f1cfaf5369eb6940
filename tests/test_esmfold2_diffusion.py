"""ESMFold2's denoiser equals transformers' (``modeling_esmfold2``) on randomized weights, fp32, CPU: the atom encoder
and decoder, the diffusion transformer, the conditioning and one whole denoiser call on given noisy coordinates.

The reference modules are built from ``tiny_reference_config`` (wider one-hots, a 16-atom window), under the eager
and the sdpa attention, every parameter and the Fourier buffers randomized, and their state dict loaded strictly
into ours. The atom features are two small proteins featurised by the reference's ``prepare_protein_features`` and
one-hot encoded as its ``_prepare_features`` does, padded into a batch of two (padding atoms and a padding token
included). Outputs are compared at valid atoms and tokens: a padding atom out of reach of every valid atom has no
keys to attend to, which the reference's eager path answers with a uniform average and ours (as its sdpa path) with
zeros; nothing valid reads those atoms. The bound: against the sdpa path the denoised coordinates are bit-equal;
against the eager path they differ by up to ~1.5e-5 A on coordinates up to ~60 A (fp32 rounding of the softmax).
"""

from __future__ import annotations

import pytest
import torch
from esmfold2_reference import FEATURE_OVERRIDES as OVERRIDES
from esmfold2_reference import SEQUENCES, featurised, randomized, tiny_reference_config

from esmfold_lite.esmfold2 import atom_transformer
from esmfold_lite.esmfold2.atom_transformer import AtomDecoder, AtomEncoder
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.diffusion_conditioning import DiffusionConditioning
from esmfold_lite.esmfold2.diffusion_module import DiffusionModule
from esmfold_lite.esmfold2.diffusion_transformer import DiffusionTransformer

reference = pytest.importorskip("transformers.models.esmfold2.modeling_esmfold2")

TOL = dict(atol=2e-5, rtol=1e-5)
@pytest.fixture(scope="module", params=["eager", "sdpa"])
def configs(request) -> tuple[object, EsmFold2Config]:
    config = tiny_reference_config(**OVERRIDES)
    config._attn_implementation = request.param
    return config, EsmFold2Config.from_dict(config.to_dict())


def ported(ref: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval()


def test_features_have_padding(configs):
    _, atoms, token_mask = featurised(configs[0])
    assert (~atoms.atom_attention_mask).sum(1).min() > 8 and not token_mask.all()


@pytest.mark.parametrize("stack", ["input_embedder", "denoiser"])
@pytest.mark.parametrize("query_block", [256, 7])
def test_atom_encoder(configs, monkeypatch, query_block, stack):
    """The encoder at the input embedder's and at the denoiser's atom sizes, with the windowed attention in one
    block and in blocks of 7."""
    monkeypatch.setattr(atom_transformer, "QUERY_BLOCK", query_block)
    ref_config, config = configs
    pick = {
        "input_embedder": lambda c: c.atom_encoder,
        "denoiser": lambda c: c.structure_head.diffusion_module.atom_encoder,
    }[stack]
    ref = randomized(reference.EsmFold2AtomEncoder(ref_config, pick(ref_config)))
    ours = ported(ref, AtomEncoder(config, pick(config)))
    ref_atoms, atoms, _ = featurised(ref_config)
    mask, num_tokens = atoms.atom_attention_mask, len(SEQUENCES[0])
    x = torch.randn(*mask.shape, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_embeds, ref_rotary = ref.embed_atoms(ref_atoms)
        window = ref.build_attention_mask(mask, ref_embeds)
        ref_tokens, ref_x = ref(x, ref_embeds, window, ref_rotary, mask, ref_atoms.atom_to_token, num_tokens)
        embeds, rotary = ours.embed_atoms(atoms)
        tokens, out_x = ours(x, embeds, mask, rotary, atoms.atom_to_token, num_tokens)
    torch.testing.assert_close(embeds, ref_embeds, **TOL)
    torch.testing.assert_close(rotary, ref_rotary, **TOL)
    torch.testing.assert_close(out_x[mask], ref_x[mask], **TOL)
    torch.testing.assert_close(tokens, ref_tokens, **TOL)


def test_atom_decoder(configs):
    ref_config, config = configs
    ref = randomized(reference.EsmFold2AtomDecoder(ref_config), seed=2)
    ours = ported(ref, AtomDecoder(config))
    ref_atoms, atoms, _ = featurised(ref_config)
    mask = atoms.atom_attention_mask
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, len(SEQUENCES[0]), 32, generator=generator)
    x, conditioning = torch.randn(2, *mask.shape, 32, generator=generator)
    rotary = reference.EsmFold2RotaryEmbedding(ref_config.structure_head.diffusion_module.atom_encoder)(
        atoms.ref_pos, atoms.ref_space_uid, torch.float32
    )
    with torch.no_grad():
        window = reference.EsmFold2AtomEncoder(ref_config, ref_config.atom_encoder).build_attention_mask(mask, x)
        expected = ref(tokens, x, conditioning, window, rotary, atoms.atom_to_token)
        got = ours(tokens, x, conditioning, mask, rotary, atoms.atom_to_token)
    torch.testing.assert_close(got[mask], expected[mask], **TOL)


def test_diffusion_transformer(configs):
    ref_config, config = configs
    ref = randomized(reference.EsmFold2DiffusionTransformer(ref_config), seed=4)
    ours = ported(ref, DiffusionTransformer(config))
    _, _, token_mask = featurised(ref_config)
    generator = torch.Generator().manual_seed(5)
    tokens, single = torch.randn(2, 2, token_mask.shape[1], 32, generator=generator)
    pair = torch.randn(2, token_mask.shape[1], token_mask.shape[1], 16, generator=generator)
    with torch.no_grad():
        expected = ref(tokens, single, ref.compute_pair_biases(pair, token_mask))
        got = ours(tokens, single, ours.pair_biases(pair, token_mask))
    torch.testing.assert_close(got[token_mask], expected[token_mask], **TOL)


def test_conditioning(configs):
    ref_config, config = configs
    ref = randomized(reference.EsmFold2DiffusionConditioning(ref_config), seed=6)
    ours = ported(ref, DiffusionConditioning(config))
    generator = torch.Generator().manual_seed(7)
    pair_trunk, relpos = torch.randn(2, 2, 5, 5, 16, generator=generator)
    single_inputs = torch.randn(2, 5, 91, generator=generator)
    noise_level = torch.tensor([0.01, 16.0, 150.0, 0.0])  # 0: the clamp of log(sigma / sigma_data)
    with torch.no_grad():
        torch.testing.assert_close(ours.pair(pair_trunk, relpos), ref.compute_pair_repr(pair_trunk, relpos), **TOL)
        ref_single, single = ref.compute_single_repr(single_inputs), ours.project_single(single_inputs)
        torch.testing.assert_close(single, ref_single, **TOL)
        expected = ref(noise_level, ref_single.repeat(2, 1, 1))
        torch.testing.assert_close(ours(noise_level, single.repeat(2, 1, 1)), expected, **TOL)


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_denoiser_call(configs, num_samples, batch):
    """One whole denoiser call (conditioning prepared once, expanded over the samples; a batch of one keeps the pair
    biases unexpanded) on given noisy coordinates, at a different noise level per sample."""
    ref_config, config = configs
    ref = randomized(reference.EsmFold2DiffusionModule(ref_config), seed=8)
    ours = ported(ref, DiffusionModule(config))
    ref_atoms, atoms, token_mask = featurised(ref_config, SEQUENCES[:batch])
    batch, num_tokens = token_mask.shape
    generator = torch.Generator().manual_seed(9)
    pair_trunk, relpos = torch.randn(2, batch, num_tokens, num_tokens, 16, generator=generator)
    single_inputs = torch.randn(batch, num_tokens, 91, generator=generator)
    noisy = 20.0 * torch.randn(batch * num_samples, atoms.ref_pos.shape[1], 3, generator=generator)
    noise_level = torch.linspace(0.5, 200.0, batch * num_samples)
    with torch.no_grad():
        ref_cond = ref.prepare_conditioning(ref_atoms, pair_trunk, relpos, single_inputs, token_mask, num_samples)
        expected = ref(noisy, noise_level, ref_cond)
        cond = ours.prepare(atoms, pair_trunk, relpos, single_inputs, token_mask, num_samples)
        got = ours(noisy, noise_level, cond)
    mask = atoms.atom_attention_mask.repeat_interleave(num_samples, 0)
    torch.testing.assert_close(got[mask], expected[mask], **TOL)
