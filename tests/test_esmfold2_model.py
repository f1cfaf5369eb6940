"""The whole ESMFold2 fold equals transformers' ``EsmFold2Model.fold`` after the same ``torch.manual_seed``: a tiny
reference with every parameter and the Fourier buffers randomized, its state dict renamed
(``weights.esmfold2_format.esmfold2_state_from_transformers``) and loaded strictly into ours; the features are the
reference's own (``protein_utils.prepare_protein_features``; a complex: two chains concatenated the reference's
way, separate asym ids), ESM C run from ``input_ids`` on both sides.

Bound: atol 1e-4 + rtol 1e-4 on coordinates (seen: 9e-5 Å on coordinates up to 47 Å, 2e-6 relative) and on the
confidence outputs (pLDDT on 0-100 in ours, 0-1 in the reference: seen 3e-4 per atom on 0-100, 3e-6 on 0-1; PAE,
PDE 3e-5 Å; pTM, ipTM 1e-9). Each stage is equal to 1e-5 or bit-equal on its own; the whole fold chains the ESM C
states, the trunk loops and every denoising step, whose fp32 rounding (summation order in ESM C and the trunk)
passes on through the loops and the sampler, so the bound is looser than a single stage's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from esmfold2_reference import (
    FEATURE_OVERRIDES,
    MSA_ONLY,
    complex_features,
    randomized_reference,
    tiny_reference_config,
)

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.model import ESMFold2
from esmfold_lite.lm.esmc import ESMCConfig
from esmfold_lite.weights.esmc_format import esmc_config_from_transformers
from esmfold_lite.weights.esmfold2_format import esmfold2_state_from_transformers

modeling = pytest.importorskip("transformers.models.esmfold2.modeling_esmfold2")
protein_utils = pytest.importorskip("transformers.models.esmfold2.protein_utils")

TOL = dict(atol=1e-4, rtol=1e-4)
PER_SAMPLE = ("plddt", "plddt_per_atom", "plddt_ca", "complex_plddt", "complex_iplddt", "pae", "pde", "ptm", "iptm")


@pytest.fixture(scope="module")
def models() -> tuple[object, ESMFold2]:
    ref_config = tiny_reference_config(**FEATURE_OVERRIDES)
    reference = randomized_reference(ref_config, seed=3)
    config = EsmFold2Config.from_dict(ref_config.to_dict())
    ours = ESMFold2(config, ESMCConfig(**esmc_config_from_transformers(ref_config.esmc_config.to_dict()))).eval()
    ours.load_state_dict(esmfold2_state_from_transformers(reference.state_dict()), strict=True)
    return reference, ours


def _compare(reference, ours, features, seed: int, **settings):
    """Both folds after ``torch.manual_seed(seed)``; returns the reference's output."""
    torch.manual_seed(seed)
    expected = reference.fold(**features, **settings)
    after_reference = torch.rand(4)
    torch.manual_seed(seed)
    ours_features = {k: v for k, v in features.items() if k not in MSA_ONLY}
    got = ours(
        **ours_features,
        num_loops=settings.get("num_loops"),
        num_samples=settings.get("num_diffusion_samples"),
        num_steps=settings.get("num_sampling_steps"),
    )
    torch.testing.assert_close(torch.rand(4), after_reference, atol=0, rtol=0)  # the same numbers drawn
    mask = features["atom_attention_mask"].repeat_interleave(got.sample_atom_coords.shape[0], 0)
    torch.testing.assert_close(got.sample_atom_coords[mask], expected.sample_atom_coords[mask], **TOL)
    assert expected.sample_atom_coords[mask].abs().max() > 1.0  # not collapsed to the origin
    torch.testing.assert_close(got.distogram_logits, expected.distogram_logits, **TOL)
    for name in PER_SAMPLE:
        scale = 100.0 if "plddt" in name else 1.0
        torch.testing.assert_close(getattr(got.confidence, name), scale * getattr(expected, name), **TOL)
    torch.testing.assert_close(got.confidence.pair_chains_iptm, expected.pair_chains_iptm, **TOL)
    assert int(got.ranking[0, 0]) == protein_utils._rank_samples(expected)
    assert sorted(got.ranking[0].tolist()) == list(range(got.sample_atom_coords.shape[0]))
    return expected


@pytest.mark.parametrize("num_samples, num_steps", [(1, 2), (3, 3)])
def test_one_protein(models, num_samples, num_steps):
    reference, ours = models
    features = protein_utils.prepare_protein_features("MKTAYIAKQRWG")
    with torch.no_grad():
        _compare(reference, ours, features, 7, num_diffusion_samples=num_samples, num_sampling_steps=num_steps)


def test_two_chain_complex(models):
    reference, ours = models
    features = complex_features(["MKTAYIAK", "GSCLPH"])
    with torch.no_grad():
        expected = _compare(reference, ours, features, 11, num_diffusion_samples=2, num_sampling_steps=3, num_loops=1)
    assert expected.pair_chains_iptm.shape == (2, 2, 2)  # two samples, two chains
    assert torch.all(expected.iptm > 0)


def test_refuses_an_msa_encoder():
    config = EsmFold2Config.from_dict(tiny_reference_config(msa_encoder=dict(enabled=True)).to_dict())
    with pytest.raises(ValueError, match="MSA encoder"):
        ESMFold2(config, ESMCConfig(num_layers=1, embed_dim=16, attention_heads=2))


def test_refuses_a_non_protein_chain(models):
    """Even with the ESM C states given (ESM C, which refuses too, is not run)."""
    _, ours = models
    features = {k: v for k, v in protein_utils.prepare_protein_features("MKTAY").items() if k not in MSA_ONLY}
    features["mol_type"][0, 2] = 1  # a DNA token
    features.pop("input_ids")
    states = torch.zeros(1, 5, ours.esmc.num_layers + 1, ours.config.esmc_config.hidden_size)
    with pytest.raises(ValueError, match="non-protein"):
        ours(**features, lm_hidden_states=states)


def padded_batch(sequences: list[str]) -> dict[str, torch.Tensor]:
    """The reference's features of each protein, right-padded with zeros (masks False) into one batch."""
    features = [protein_utils.prepare_protein_features(s) for s in sequences]

    def pad(value: torch.Tensor, like: list[torch.Tensor]) -> torch.Tensor:
        widths = [max(v.shape[d] for v in like) - value.shape[d] for d in range(1, value.dim())]
        return F.pad(value, [p for w in reversed(widths) for p in (0, w)])

    return {name: torch.cat([pad(f[name], [g[name] for g in features]) for f in features]) for name in features[0]}


def test_padded_batch(models):
    """Two proteins of different lengths in one batch, two samples each: every real atom as the reference's."""
    reference, ours = models
    features = padded_batch(["MKTAYIAKQRWG", "GSCLPH"])
    with torch.no_grad():
        torch.manual_seed(5)
        expected = reference.fold(**features, num_diffusion_samples=2, num_sampling_steps=2)
        torch.manual_seed(5)
        got = ours(**{k: v for k, v in features.items() if k not in MSA_ONLY}, num_samples=2, num_steps=2)
    atoms = features["atom_attention_mask"].repeat_interleave(2, 0)
    tokens = features["attention_mask"].repeat_interleave(2, 0)
    torch.testing.assert_close(got.sample_atom_coords[atoms], expected.sample_atom_coords[atoms], **TOL)
    torch.testing.assert_close(got.confidence.plddt[tokens], 100 * expected.plddt[tokens], **TOL)
    torch.testing.assert_close(got.confidence.ptm, expected.ptm, **TOL)
    assert got.ranking.shape == (2, 2)
