"""Mutation strings (esmfold_lite.io.mutations): parsing, checks against the wild type, error messages."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esmfold_lite.io.mutations import Substitution, all_single_mutants, check_wild_type, parse_mutation
from esmfold_lite.sequences import STANDARD_AMINO_ACIDS

WILD_TYPE = "MKTAYIAKQRQISF"
letters = st.sampled_from(STANDARD_AMINO_ACIDS)


@given(
    st.lists(st.integers(0, len(WILD_TYPE) - 1), min_size=1, max_size=4, unique=True),
    st.lists(letters, min_size=4, max_size=4),
    st.integers(-50, 50),
    st.booleans(),
)
def test_valid_mutations_round_trip(indices, mutants, offset, lower):
    text = ":".join(f"{WILD_TYPE[i]}{i + offset}{mt}" for i, mt in zip(indices, mutants, strict=False))
    text = text.lower() if lower else text
    mutation = parse_mutation(text, WILD_TYPE, offset_idx=offset)
    assert mutation.text == text
    assert mutation.substitutions == tuple(
        Substitution(i, WILD_TYPE[i], mt) for i, mt in zip(indices, mutants, strict=False)
    )
    mutant = mutation.apply(WILD_TYPE)
    assert len(mutant) == len(WILD_TYPE)
    assert [i for i in range(len(WILD_TYPE)) if mutant[i] != WILD_TYPE[i]] == sorted(
        i for i, mt in zip(indices, mutants, strict=False) if mt != WILD_TYPE[i]
    )


@given(st.text(max_size=30))
def test_any_string_parses_or_names_itself(text):
    try:
        mutation = parse_mutation(text, WILD_TYPE)
    except ValueError as exc:
        assert str(exc).startswith(f"mutation {text!r}: ")
    else:
        assert mutation.text == text and mutation.substitutions


@given(st.integers(-1000, 1000).filter(lambda p: not 1 <= p <= len(WILD_TYPE)), letters, letters)
def test_out_of_range_positions(position, wt, mt):
    text = f"{wt}{position}{mt}"
    with pytest.raises(ValueError, match=rf"^mutation '{text}': position {position} is outside the wild type"):
        parse_mutation(text, WILD_TYPE)


@given(st.integers(0, len(WILD_TYPE) - 1), letters, letters)
def test_wild_type_mismatch(index, wt, mt):
    text = f"{wt}{index + 1}{mt}"
    if WILD_TYPE[index] == wt:
        assert parse_mutation(text, WILD_TYPE).substitutions == (Substitution(index, wt, mt),)
    else:
        with pytest.raises(ValueError, match=f"the wild type has {WILD_TYPE[index]} at position {index + 1}, not {wt}"):
            parse_mutation(text, WILD_TYPE)


def test_multiple_mutant_errors_name_the_whole_mutation():
    with pytest.raises(ValueError, match=r"^mutation 'M1A:K2L:Q3P': the wild type has T at position 3, not Q"):
        parse_mutation("M1A:K2L:Q3P", WILD_TYPE)
    with pytest.raises(ValueError, match=r"^mutation 'M1A; K2L': 'M1A; K2L' is not a substitution like A42G"):
        parse_mutation("M1A; K2L", WILD_TYPE)
    assert parse_mutation(" M1A : K2L ", WILD_TYPE).substitutions[1] == Substitution(1, "K", "L")


def test_all_single_mutants():
    singles = list(all_single_mutants(WILD_TYPE, offset_idx=10))
    assert len(singles) == 19 * len(WILD_TYPE)
    assert [m.text for m in singles[:3]] == ["M10A", "M10C", "M10D"]
    assert all(parse_mutation(m.text, WILD_TYPE, offset_idx=10) == m for m in singles)
    assert len(list(all_single_mutants("MXK"))) == 19 + 20 + 19  # X is no standard amino acid


def test_check_wild_type():
    assert check_wild_type(" mkt\nAY ") == "MKTAY"
    for bad, reason in (("", "empty"), ("MK-T", "not amino-acid letters"), ("MK:TA", "one chain")):
        with pytest.raises(ValueError, match=reason):
            check_wild_type(bad)


def test_invalid_letter_message_fits_the_use():
    """B Z U O are tokens of the language models, which score-variants and embed use; only ESMFold folds them as X."""
    from esmfold_lite.sequences import LANGUAGE_MODEL, sequence_problem

    with pytest.raises(ValueError, match="Allowed: ") as error:
        check_wild_type("MKJT")
    assert "fold" not in str(error.value) and "each a token of its own" in str(error.value)
    folding = sequence_problem("MKJT")  # folding, the default: says the sequence is not folded, not "folded as unknown"
    assert "this sequence is not folded" in folding and "which ESMFold folds as unknown residues" in folding
    assert "folded as unknown" not in folding
    assert "each a token of its own" in sequence_problem("MKJT", LANGUAGE_MODEL)
    assert check_wild_type("MBZUOX") == "MBZUOX"
    with pytest.raises(ValueError, match="use must be one of"):
        sequence_problem("MK", "folding-ish")
