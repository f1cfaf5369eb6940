"""ESMFold end to end: transformers ``EsmForProteinFolding`` vs ours on the same randomized weights, loaded from the
official formats (fair-esm ``.pt`` pair, transformers folder, our own safetensors)."""

from __future__ import annotations

import pytest
import torch
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.weights.esmfold_format import save_esmfold
from esmfold_lite.weights.safe_pickle import CheckpointError

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE", "ACDEFGHIKLMNPQRSTVWYX"]


@pytest.fixture(scope="module", params=[(2, 2, 4), (3, 3, 1)], ids=["2blocks-2sm", "3blocks-3sm-1recycle"])
def models(request, tmp_path_factory):
    blocks, sm_blocks, max_recycles = request.param
    reference = tiny_hf_esmfold(num_blocks=blocks, sm_blocks=sm_blocks, max_recycles=max_recycles, seed=blocks)
    folder = tmp_path_factory.mktemp("fair")
    esmfold_pt, _ = write_fair_esmfold(reference, folder)
    return reference, load_model(esmfold_pt)


def _reference(reference, sequence: str, num_recycles: int | None):
    batch = encode_batch([sequence])
    with torch.no_grad():
        return reference(
            batch.aatype, attention_mask=batch.mask.long(), position_ids=batch.residue_index, num_recycles=num_recycles
        )


@pytest.mark.parametrize("num_recycles", [0, 3, None])
def test_fair_esm_pair_matches_transformers(models, num_recycles):
    reference, ours = models
    for sequence in SEQUENCES[:2]:
        theirs = _reference(reference, sequence, num_recycles)
        batch = encode_batch([sequence])
        with torch.no_grad():
            out = ours(batch.aatype, batch.mask, batch.residue_index, num_recycles=num_recycles)
        assert (out["positions"] - theirs.positions).abs().max() <= 1e-4
        assert (out["plddt"] - 100 * theirs.plddt).abs().max() <= 1e-3
        assert (out["predicted_aligned_error"] - theirs.predicted_aligned_error).abs().max() <= 1e-3
        assert (out["ptm"] - theirs.ptm).abs().max() <= 1e-5
        assert (out["distogram_logits"] - theirs.distogram_logits).abs().max() <= 1e-4
        assert (out["lm_logits"] - theirs.lm_logits).abs().max() <= 1e-4


def test_batch_equals_single_runs(models):
    _, ours = models
    batched = ours.fold(SEQUENCES, num_recycles=1)
    for i, sequence in enumerate(SEQUENCES):
        alone = ours.fold(sequence, num_recycles=1)
        n = len(sequence)
        assert (batched.positions[i, :n] - alone.positions[0]).abs().max() <= 1e-4
        assert (batched.plddt[i, :n] - alone.plddt[0]).abs().max() <= 1e-3
        assert (batched.pae[i, :n, :n] - alone.pae[0]).abs().max() <= 1e-3
        assert (batched.ptm[i] - alone.ptm[0]).abs() <= 1e-5
        assert (batched.mean_plddt[i] - alone.mean_plddt[0]).abs() <= 1e-3


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunk_size_does_not_change_outputs(models, chunk_size):
    _, ours = models
    full = ours.fold(SEQUENCES[:2], num_recycles=1)
    chunked = ours.fold(SEQUENCES[:2], num_recycles=1, chunk_size=chunk_size)
    assert (full.positions - chunked.positions).abs().max() <= 1e-4
    assert (full.pae - chunked.pae).abs().max() <= 1e-3
    assert (full.ptm - chunked.ptm).abs().max() <= 1e-5


def test_transformers_folder_and_own_format_give_identical_results(models, tmp_path, caplog):
    reference, ours = models
    reference.save_pretrained(tmp_path / "hf")
    from_hf = load_model(tmp_path / "hf")
    assert "ignoring unknown" not in caplog.text  # transformers' own fields in the nested configs are no settings
    save_esmfold(ours, tmp_path / "own" / "model")
    from_own = load_model(tmp_path / "own")
    expected = ours.fold(SEQUENCES[0], num_recycles=1)
    for other in (from_hf, from_own):
        got = other.fold(SEQUENCES[0], num_recycles=1)
        assert torch.equal(got.positions, expected.positions)
        assert torch.equal(got.ptm, expected.ptm)
    for folder in ("hf", "own"):  # they hold their LM: another one given would go unused
        with pytest.raises(CheckpointError, match="holds its own language model.*would not be used: drop it"):
            load_model(tmp_path / folder, lm=tmp_path / "esm2.pt")


def test_multichain_fold_cuts_linker_and_names_chains(models):
    _, ours = models
    pred = ours.fold("MKTAYIAKQR:GSHMLEW", num_recycles=0)
    one = pred.select(0)
    assert one.positions.shape[1] == 10 + 7
    assert one.chain_index[0].tolist() == [0] * 10 + [1] * 7
    pdb = pred.to_pdb(0)
    chains = {line[21] for line in pdb.splitlines() if line.startswith("ATOM")}
    assert chains == {"A", "B"}


def test_full_width_trunk_matches_transformers(tmp_path):
    """esmfold_v1's real widths (c_s=1024, c_z=128, IPA at full size), one trunk block, a tiny LM."""
    reference = tiny_hf_esmfold(num_blocks=1, sm_blocks=8, full_width=True, seed=7)
    esmfold_pt, _ = write_fair_esmfold(reference, tmp_path)
    ours = load_model(esmfold_pt)
    assert ours.cfg.trunk.sequence_state_dim == 1024 and ours.cfg.trunk.pairwise_state_dim == 128
    sequence = SEQUENCES[0]
    theirs = _reference(reference, sequence, 1)
    batch = encode_batch([sequence])
    with torch.no_grad():
        out = ours(batch.aatype, batch.mask, batch.residue_index, num_recycles=1)
    assert out["positions"].shape == (8, 1, len(sequence), 14, 3)
    assert out["s_z"].shape == (1, len(sequence), len(sequence), 128)
    assert (out["s_s"] - theirs.s_s).abs().max() <= 1e-4
    # fp32 rounding (~1e-5 Å after the first structure block) compounds over the 8 shared-weight IPA iterations at
    # this width: ~4e-4 Å after the last one, growing smoothly per block (a miswiring would differ by Å).
    assert (out["positions"][0] - theirs.positions[0]).abs().max() <= 1e-4
    assert (out["positions"] - theirs.positions).abs().max() <= 1e-3
    assert (out["plddt"] - 100 * theirs.plddt).abs().max() <= 1e-3
    assert (out["ptm"] - theirs.ptm).abs().max() <= 1e-5
