"""``ESMFold.fold`` checks its input by the FASTA rule, and its batched outputs hold no values (and no NaN) where
there is no residue."""

from __future__ import annotations

import re

import pytest
import torch
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.io.fasta import FastaRecord, validate_record
from esmfold_lite.sequences import LANGUAGE_MODEL, checked_sequences, normalize_sequence, sequence_problem


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    esmfold_pt, _ = write_fair_esmfold(tiny_hf_esmfold(num_blocks=1, sm_blocks=1, seed=3), tmp_path_factory.mktemp("m"))
    return load_model(esmfold_pt)


@pytest.mark.parametrize(
    ("sequences", "expected"),
    [
        ("MKJAY", r"index 0: not amino-acid letters \(position\): 'J' at 3"),
        (["MKTAY", "MK*TA"], r"index 1: .*'\*' at 3"),
        (["MKTAY", "MKTAY", "MK-TA"], r"index 2: .*'-' at 3"),
        ("MKÄA", r"index 0: .*'\\xc4' at 3"),
        ("MK.A1", r"'\.' at 3, '1' at 5"),
        ("MK::TA", r"index 0: empty chain 2 of 3"),
        ("MKTA:", r"index 0: empty chain 2 of 2"),
        ("MKV:GS-H", r"'-' at 2:3"),
        (":".join(["G"] * 63), r"index 0: 63 chains, more than the 62 that output files can name"),
        ("", r"index 0: empty sequence"),
        (["MKV", "  *"], r"index 1: empty sequence"),
        ([], r"no sequences given"),
    ],
)
def test_bad_input_raises_value_error_naming_index_letter_and_position(model, sequences, expected):
    with pytest.raises(ValueError, match=expected):
        model.fold(sequences, num_recycles=0)


def test_non_string_input_raises_type_error(model):
    with pytest.raises(TypeError, match="index 1 is a bytes"):
        model.fold(["MKV", b"MKV"])
    with pytest.raises(TypeError, match="got NoneType"):
        model.fold(None)
    with pytest.raises(TypeError, match="got bytes: decode them first"):
        model.fold(b"MKV")
    for recycles in (1.5, "3", True):
        with pytest.raises(TypeError, match="num_recycles must be an integer or None"):
            model.fold("MKV", num_recycles=recycles)
    with pytest.raises(ValueError, match="num_recycles must be >= 0"):
        model.fold("MKV", num_recycles=-1)


def test_selecting_a_sequence_that_is_not_there_names_how_many_there_are(model):
    pred = model.fold(["MKV", "GSHM"], num_recycles=0)
    assert pred.select(-1).sequences == ["GSHM"]
    with pytest.raises(IndexError, match=r"no sequence 2: this prediction holds 2 \(0 to 1\)"):
        pred.to_pdb(2)


def test_a_language_model_reads_one_chain():
    problem = sequence_problem("MKV:GSH", LANGUAGE_MODEL)
    assert problem == "2 chains separated by ':'; a language model reads one chain per sequence"
    assert sequence_problem("MKV:GSH") is None and sequence_problem(":".join(["G"] * 62)) is None


def test_lower_case_whitespace_and_trailing_stop_are_accepted_as_in_fasta(model):
    expected = model.fold(["MKTAYIAK", "GSHM:LEW"], num_recycles=0)
    got = model.fold(["mkta yiak*\n", " gShm* : lew*"], num_recycles=0)
    assert got.sequences == ["MKTAYIAK", "GSHM:LEW"]
    assert torch.equal(got.positions, expected.positions) and torch.equal(got.ptm, expected.ptm)


def test_fasta_validator_and_fold_share_one_rule():
    for text in ("mkta yiak*", "MK J", "A*A", "GIVEQ*:fvnq", "MK::TA", "", "*", "MKÄ", "AC-D"):
        sequence = normalize_sequence(text)
        record = FastaRecord("x", "", sequence, 1)
        assert validate_record(record) == sequence_problem(sequence)
        if sequence_problem(sequence) is None:
            assert checked_sequences(text) == [sequence]
        else:
            with pytest.raises(ValueError, match=re.escape(f"index 0: {sequence_problem(sequence)}")):
                checked_sequences(text)


def test_padding_and_linkers_hold_zeros_and_nothing_is_nan(model):
    sequences = ["MKTAYIAKQRQISF", "GSH", "ACD:EF", "XXBZ"]
    pred = model.fold(sequences, num_recycles=1)
    keep = pred.mask.bool()
    assert keep.sum(-1).tolist() == [14, 3, 5, 4]
    drop = ~keep
    pairs = drop[:, :, None] | drop[:, None, :]
    assert pred.positions[drop].abs().sum() == 0 and pred.atom_mask[drop].sum() == 0
    assert pred.plddt[drop].abs().sum() == 0 and pred.atom_plddt[drop].abs().sum() == 0
    assert pred.pae[pairs].abs().sum() == 0 and pred.distogram_logits[pairs].abs().sum() == 0
    for name in ("positions", "atom_mask", "plddt", "atom_plddt", "mean_plddt", "ptm", "pae", "distogram_logits"):
        assert torch.isfinite(getattr(pred, name)).all(), name
    # real residues keep their values; the all-unknown sequence has no atoms and a mean pLDDT of 0, not 0/0
    assert (pred.plddt[keep] > 0).all() and (pred.mean_plddt[:3] > 0).all()
    assert pred.atom_mask[3].sum() == 0 and pred.mean_plddt[3] == 0
    alone = model.fold(sequences[1], num_recycles=1)
    assert (pred.select(1).positions - alone.positions).abs().max() <= 1e-4
