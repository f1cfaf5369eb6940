"""Confidence math (pLDDT, PAE, pTM) against transformers' port of the original ESMFold heads."""

import pytest
import torch
from transformers.models.esm.modeling_esmfold import categorical_lddt
from transformers.models.esm.openfold_utils.loss import compute_predicted_aligned_error, compute_tm

from esmfold_lite.fold.heads import (
    aligned_error_bin_centres,
    mean_plddt,
    pae_from_logits,
    plddt_from_logits,
    ptm_from_logits,
    residue_plddt,
)


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_plddt_is_100_times_categorical_lddt():
    logits = _logits(2, 9, 37, 50)
    plddt = plddt_from_logits(logits)
    assert plddt.shape == (2, 9, 37)
    torch.testing.assert_close(plddt, 100 * categorical_lddt(logits, bins=50))
    assert 0 < plddt.min() and plddt.max() < 100


def test_residue_plddt_is_ca_and_mean_plddt_weights_atoms():
    atom_plddt = 100 * torch.rand(2, 6, 37, generator=torch.Generator().manual_seed(1))
    atom_mask = (torch.rand(2, 6, 37, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    atom_mask[1, 4:] = 0  # padding
    assert torch.equal(residue_plddt(atom_plddt), atom_plddt[:, :, 1])
    expected = torch.stack([atom_plddt[b][atom_mask[b].bool()].mean() for b in range(2)])
    torch.testing.assert_close(mean_plddt(atom_plddt, atom_mask), expected)


def test_pae_matches_reference():
    logits = _logits(2, 11, 11, 64)
    reference = compute_predicted_aligned_error(logits, max_bin=31, no_bins=64)
    torch.testing.assert_close(pae_from_logits(logits), reference["predicted_aligned_error"])
    assert aligned_error_bin_centres()[-1].item() == pytest.approx(reference["max_predicted_aligned_error"].item())


@pytest.mark.parametrize("length", [1, 5, 19, 20, 40])
def test_ptm_of_one_sequence_matches_reference(length):
    logits = _logits(1, length, length, 64, seed=length)
    ptm = ptm_from_logits(logits, torch.ones(1, length))
    assert ptm.shape == (1,)
    torch.testing.assert_close(ptm[0], compute_tm(logits, max_bin=31, no_bins=64))


def test_ptm_per_sequence_in_a_padded_batch():
    lengths = [7, 30, 23]
    logits = _logits(3, 30, 30, 64, seed=3)  # the padding holds random logits too: it must be ignored
    mask = (torch.arange(30)[None] < torch.tensor(lengths)[:, None]).float()
    ptm = ptm_from_logits(logits, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(ptm[b], compute_tm(logits[b : b + 1, :n, :n], max_bin=31, no_bins=64))
        torch.testing.assert_close(ptm[b : b + 1], ptm_from_logits(logits[b : b + 1, :n, :n], torch.ones(1, n)))


def test_half_precision_logits_give_fp32_confidences():
    logits = _logits(1, 8, 8, 64)
    ptm = ptm_from_logits(logits.bfloat16(), torch.ones(1, 8))
    pae = pae_from_logits(logits.bfloat16())
    assert ptm.dtype == pae.dtype == torch.float32
    torch.testing.assert_close(ptm, ptm_from_logits(logits, torch.ones(1, 8)), atol=2e-2, rtol=0)
    torch.testing.assert_close(pae, pae_from_logits(logits), atol=0.5, rtol=0)
    assert plddt_from_logits(_logits(3, 50).half()).dtype == torch.float32
