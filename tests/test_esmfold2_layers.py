"""ESMFold2's shared layers (``esmfold2.layers``) and config equal transformers' on randomized weights (fp32, CPU).

Each primitive is built both ways at a tiny size, the reference's parameters are randomized (``randomize_``: no
zero-initialised layer left), loaded strictly into ours, and the outputs compared.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from esmfold2_reference import tiny_reference_config
from randomize import randomize_
from transformers.models.esmfold2 import modeling_esmfold2 as ref

from esmfold_lite.esmfold2 import layers
from esmfold_lite.esmfold2.config import AtomEncoderConfig, EsmFold2Config

TOL = dict(atol=1e-5, rtol=1e-5)


def _loaded(ours: torch.nn.Module, theirs: torch.nn.Module) -> torch.nn.Module:
    randomize_(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def test_config_from_reference_dict():
    reference = tiny_reference_config()
    config = EsmFold2Config.from_dict(reference.to_dict())
    assert config.pairwise_hidden_size == reference.pairwise_hidden_size
    assert config.esmc_config.hidden_size == reference.esmc_config.hidden_size
    assert config.lm_encoder.num_hidden_layers == reference.lm_encoder.num_hidden_layers
    assert config.msa_encoder.enabled is False
    assert config.structure_head.num_distogram_bins == reference.structure_head.num_distogram_bins
    diffusion = config.structure_head.diffusion_module
    assert dataclasses.asdict(diffusion.atom_encoder) == {
        f.name: getattr(reference.structure_head.diffusion_module.atom_encoder, f.name)
        for f in dataclasses.fields(AtomEncoderConfig)
    }
    assert config.atom_feature_dim == reference.atom_feature_dim
    assert diffusion.head_dim == reference.structure_head.diffusion_module.head_dim


def test_config_defaults_match_reference():
    from transformers.models.esmfold2.configuration_esmfold2 import EsmFold2Config as ReferenceConfig

    reference = ReferenceConfig(esmc_config={"model_type": "esmc"}).to_dict()
    assert dataclasses.asdict(EsmFold2Config()) == dataclasses.asdict(EsmFold2Config.from_dict(reference))


def test_config_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="single_inputs_size"):
        EsmFold2Config(single_inputs_size=100)
    with pytest.raises(ValueError, match="rotary"):
        AtomEncoderConfig(hidden_size=16, num_attention_heads=4)


def test_layer_norm():
    theirs = ref.EsmFold2LayerNorm(12)
    ours = _loaded(layers.LayerNorm(12), theirs)
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)
    assert ours(x.double()).dtype == torch.float64


def test_rms_norm():
    x = torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(layers.RMSNorm()(x), ref.EsmFold2RMSNorm()(x), **TOL)
    assert layers.RMSNorm(1e-3).variance_epsilon == 1e-3


def test_swiglu():
    theirs = ref.EsmFold2SwiGLU(12, 20)
    ours = _loaded(layers.SwiGLU(12, 20), theirs)
    x = torch.randn(2, 7, 12)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


@pytest.mark.parametrize("chunk_size", [None, 0, 2, 64])
def test_transition(chunk_size):
    theirs = ref.EsmFold2Transition(12, 20, chunk_size)
    ours = _loaded(layers.Transition(12, 20, chunk_size), theirs)
    x = torch.randn(2, 5, 4, 12)  # a pair representation: chunked along dimension 1
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_adaptive_layer_norm():
    theirs = ref.EsmFold2AdaptiveLayerNorm(12)
    ours = _loaded(layers.AdaptiveLayerNorm(12), theirs)
    x, s = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    torch.testing.assert_close(ours(x, s), theirs(x, s), **TOL)


def test_fourier_embedding():
    theirs = ref.EsmFold2FourierEmbedding(16)
    ours = layers.FourierEmbedding(16)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    t = torch.rand(3) * 4
    torch.testing.assert_close(ours(t), theirs(t), **TOL)


def test_rotary_embedding_and_apply():
    atom = tiny_reference_config().atom_encoder
    theirs = ref.EsmFold2RotaryEmbedding(atom)
    ours = layers.RotaryEmbedding(AtomEncoderConfig.from_dict(atom.to_dict()))
    pos, uid = torch.randn(2, 9, 3) * 5, torch.randint(0, 4, (2, 9))
    for a, b in zip(ours(pos, uid, torch.float32), theirs(pos, uid, torch.float32), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    cos, sin = ours(pos, uid, torch.float32)
    q, k = (
        torch.randn(2, atom.num_attention_heads, 9, atom.head_dim),
        torch.randn(2, atom.num_attention_heads, 9, atom.head_dim),
    )
    for a, b in zip(layers.apply_rotary_pos_emb(q, k, cos, sin), ref.apply_rotary_pos_emb(q, k, cos, sin), strict=True):
        torch.testing.assert_close(a, b, **TOL)
