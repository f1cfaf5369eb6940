"""ESMFold2 featurisation (esmfold2/features.py) against transformers' ``protein_utils.prepare_protein_features``:
one chain equal on every key, dtype and value; a complex equal to the reference's per-chain features concatenated
the way tests/esmfold2_reference.py's ``complex_features`` builds them for the reference's ``fold()``."""

from __future__ import annotations

import inspect

import pytest
import torch
from esmfold2_reference import MSA_ONLY, complex_features
from hypothesis import given, settings
from hypothesis import strategies as st

from esmfold_lite.esmfold2.features import protein_features
from esmfold_lite.esmfold2.model import ESMFold2

protein_utils = pytest.importorskip("transformers.models.esmfold2.protein_utils")

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def assert_same(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(expected)
    for name, value in expected.items():
        assert ours[name].dtype == value.dtype, name
        assert torch.equal(ours[name], value), name


def reference(sequence: str) -> dict[str, torch.Tensor]:
    """The reference's features less the MSA encoder's inputs, which ESMFold2-Fast has not (checked all zero)."""
    features = protein_utils.prepare_protein_features(sequence)
    assert all(not features[name].any() for name in MSA_ONLY)
    return {k: v for k, v in features.items() if k not in MSA_ONLY}


@pytest.mark.parametrize("sequence", [AMINO_ACIDS, AMINO_ACIDS[::-1] * 3, "G", "MK", "MKXTAYXW", "X"])
def test_one_chain_equals_the_reference(sequence):
    assert_same(protein_features(sequence), reference(sequence))
    assert_same(protein_features([sequence]), reference(sequence))


@settings(max_examples=8)
@given(st.text(alphabet=AMINO_ACIDS + "X", min_size=1, max_size=40))
def test_random_chains_equal_the_reference(sequence):
    assert_same(protein_features(sequence), reference(sequence))


def test_heterodimer_equals_the_reference_chains_concatenated():
    chains = ["MKTAYIAK", "GSCLPHW"]
    assert_same(protein_features(chains), complex_features(chains))


def test_homodimer_shares_its_entity_and_counts_copies():
    """As complex_features, except that identical chains share their entity id and sym_id counts the copies."""
    chains = ["MKTAYIAKX", "GSCLPH", "MKTAYIAKX"]
    ours, expected = protein_features(chains), complex_features(chains)
    assert_same({k: v for k, v in ours.items() if k not in ("entity_id", "sym_id")},
                {k: v for k, v in expected.items() if k not in ("entity_id", "sym_id")})  # fmt: skip
    lengths = [len(c) for c in chains]
    assert ours["entity_id"][0].tolist() == [1] * lengths[0] + [2] * lengths[1] + [1] * lengths[2]
    assert ours["sym_id"][0].tolist() == [0] * lengths[0] + [0] * lengths[1] + [1] * lengths[2]
    assert ours["asym_id"][0].tolist() == [0] * lengths[0] + [1] * lengths[1] + [2] * lengths[2]


def test_keys_are_the_model_inputs():
    parameters = inspect.signature(ESMFold2.forward).parameters
    assert set(protein_features("MK")) <= set(parameters)


@pytest.mark.parametrize("letter", ["U", "B", "Z", "O", "a", "-", "1"])
def test_refuses_a_letter_outside_the_amino_acids(letter):
    with pytest.raises(ValueError, match=rf"chain 2, position 3: '{letter}'"):
        protein_features(["MKT", f"GS{letter}L"])


@pytest.mark.parametrize("chains", [[], "", ["MK", ""]])
def test_refuses_an_empty_chain(chains):
    with pytest.raises(ValueError, match="empty"):
        protein_features(chains)
