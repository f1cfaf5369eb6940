import esm
import torch
from hypothesis import given
from hypothesis import strategies as st

from esmfold_lite.alphabet import ESM_ALPHABET

FAIR = esm.Alphabet.from_architecture("ESM-1b")


def test_vocabulary_equals_fair_esm():
    assert list(ESM_ALPHABET.tokens) == FAIR.all_toks
    for name in ("padding_idx", "cls_idx", "eos_idx", "unk_idx", "mask_idx"):
        assert getattr(ESM_ALPHABET, name) == getattr(FAIR, name)


@given(st.lists(st.text(alphabet="ACDEFGHIKLMNPQRSTVWYXBUZO", min_size=1, max_size=30), min_size=1, max_size=4))
def test_batch_encoding_equals_fair_esm(seqs):
    _, _, theirs = FAIR.get_batch_converter()([(str(i), s) for i, s in enumerate(seqs)])
    assert torch.equal(ESM_ALPHABET.batch_encode(seqs), theirs)


def test_lower_case_unknown_and_inline_mask():
    ids = ESM_ALPHABET.encode("ac<mask>j*")
    table = ESM_ALPHABET.tok_to_idx
    assert ids == [table["A"], table["C"], table["<mask>"], ESM_ALPHABET.unk_idx, ESM_ALPHABET.unk_idx]
