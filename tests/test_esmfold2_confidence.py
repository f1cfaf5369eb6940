"""ESMFold2's confidence head (``esmfold2.confidence_head``) equals transformers' ``EsmFold2ConfidenceHead`` on
randomized weights (fp32, CPU), on given coordinates and trunk states: every logit and every derived score (pLDDT,
PAE, PDE, pTM, ipTM, per-chain-pair ipTM), for one chain, two chains, and a padded batch with several samples.

pLDDT is 0–100 in ours and 0–1 in the reference, so ours is compared divided by 100.
"""

from __future__ import annotations

import pytest
import torch
from esmfold2_reference import tiny_reference_config
from randomize import randomize_
from transformers.models.esmfold2 import modeling_esmfold2 as ref

from esmfold_lite.esmfold2.confidence_head import ConfidenceHead
from esmfold_lite.esmfold2.confidence_scores import intra_token_index
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.fold.heads import categorical_mean

TOL = dict(atol=1e-5, rtol=1e-5)
# With a few tokens d0(N) is small, so the TM terms are ~1e-3: compared relative to their size.
SMALL_SCORE_FIELDS = ("ptm", "iptm", "pair_chains_iptm")
SMALL_TOL = dict(atol=1e-9, rtol=1e-5)
PLDDT_FIELDS = ("plddt_per_atom", "plddt", "plddt_ca", "complex_plddt", "complex_iplddt")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _heads() -> tuple[ConfidenceHead, ref.EsmFold2ConfidenceHead]:
    reference_config = tiny_reference_config()
    theirs = randomize_(ref.EsmFold2ConfidenceHead(reference_config).eval(), seed=3)
    ours = ConfidenceHead(EsmFold2Config.from_dict(reference_config.to_dict())).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _inputs(chain_lengths: list[list[int]], num_samples: int, seed: int = 0) -> dict[str, torch.Tensor | int]:
    """Trunk states and sampled coordinates for a batch; item b has chains of ``chain_lengths[b]`` tokens, 1-4
    atoms per token (contiguous), padded to the longest item; padded atoms point at token 0, as the trunk's."""
    g = torch.Generator().manual_seed(seed)
    config = tiny_reference_config()
    c_i, c_z = config.single_inputs_size, config.pairwise_hidden_size
    batch, n = len(chain_lengths), max(sum(lengths) for lengths in chain_lengths)
    atoms_per_token = torch.randint(1, 5, (batch, n), generator=g)
    num_atoms = max(int(atoms_per_token[b, : sum(lengths)].sum()) for b, lengths in enumerate(chain_lengths))
    token_mask = torch.zeros(batch, n, dtype=torch.bool)
    asym_id = torch.zeros(batch, n, dtype=torch.long)
    atom_to_token = torch.zeros(batch, num_atoms, dtype=torch.long)
    atom_mask = torch.zeros(batch, num_atoms)
    rep_idx = torch.zeros(batch, n, dtype=torch.long)
    for b, lengths in enumerate(chain_lengths):
        tokens = sum(lengths)
        token_mask[b, :tokens] = True
        asym_id[b, :tokens] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        owner = torch.repeat_interleave(torch.arange(tokens), atoms_per_token[b, :tokens])
        atom_to_token[b, : len(owner)] = owner
        atom_mask[b, : len(owner)] = 1
        starts = torch.cumsum(atoms_per_token[b, :tokens], 0) - atoms_per_token[b, :tokens]
        rep_idx[b, :tokens] = starts + (atoms_per_token[b, :tokens] > 1).long()  # the second atom when there is one
    return dict(
        single_inputs=torch.randn(batch, n, c_i, generator=g),
        pair_states=torch.randn(batch, n, n, c_z, generator=g),
        coords=6 * torch.randn(batch * num_samples, num_atoms, 3, generator=g),
        distogram_atom_idx=rep_idx,
        token_mask=token_mask,
        atom_to_token=atom_to_token,
        atom_mask=atom_mask,
        asym_id=asym_id,
        relative_position_encoding=torch.randn(batch, n, n, c_z, generator=g),
        token_bonds_encoding=torch.randn(batch, n, n, c_z, generator=g),
        num_samples=num_samples,
    )


def _compare(chain_lengths: list[list[int]], num_samples: int) -> dict[str, torch.Tensor]:
    ours, theirs = _heads()
    inputs = _inputs(chain_lengths, num_samples)
    with torch.no_grad():
        got = ours(**inputs)
        want = theirs(
            single_inputs=inputs["single_inputs"],
            pair_states=inputs["pair_states"],
            predicted_coords=inputs["coords"],
            distogram_atom_idx=inputs["distogram_atom_idx"],
            attention_mask=inputs["token_mask"],
            atom_to_token=inputs["atom_to_token"],
            atom_attention_mask=inputs["atom_mask"],
            asym_id=inputs["asym_id"],
            mol_type=torch.zeros_like(inputs["asym_id"]),  # 0 = protein
            relative_position_encoding=inputs["relative_position_encoding"],
            token_bonds_encoding=inputs["token_bonds_encoding"],
            num_diffusion_samples=num_samples,
        )
    assert set(want) == {f for f in got.__dataclass_fields__}
    for name, expected in want.items():
        actual = getattr(got, name)
        if name in PLDDT_FIELDS:
            actual = actual / 100
        assert actual.shape == expected.shape, name
        tol = SMALL_TOL if name in SMALL_SCORE_FIELDS else TOL
        torch.testing.assert_close(actual, expected, **tol, msg=lambda m, name=name: f"{name}: {m}")
    return want


def test_one_chain():
    want = _compare([[7]], num_samples=1)
    assert torch.all(want["iptm"] == 0)  # no other chain
    assert want["pair_chains_iptm"].shape == (1, 1, 1)


def test_two_chains():
    want = _compare([[9, 12]], num_samples=1)  # 21 tokens: d0(N) beyond its floor at 19
    assert torch.all(want["iptm"] > 0)
    assert torch.all(want["complex_iplddt"] > 0)  # some inter-chain contact within 8 Å: the interface is not empty


def test_padded_batch_of_complexes_with_samples():
    want = _compare([[3, 4, 2], [5]], num_samples=2)
    assert want["pair_chains_iptm"].shape == (4, 3, 3)


def test_intra_token_index_restarts_at_each_token():
    atom_to_token = torch.tensor([[0, 0, 0, 1, 2, 2, 0, 0]])
    assert intra_token_index(atom_to_token).tolist() == [[0, 1, 2, 0, 0, 1, 0, 1]]
    assert torch.equal(intra_token_index(atom_to_token), ref._compute_intra_token_idx(atom_to_token))


@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (0.0, 32.0)])
def test_categorical_mean_matches_reference(start, end):
    logits = torch.randn(3, 4, 9)
    torch.testing.assert_close(categorical_mean(logits, start, end), ref._categorical_mean(logits, start, end), **TOL)
