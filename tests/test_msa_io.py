"""Reading MSAs (a3m / a2m / aligned FASTA) and choosing rows (esmfold_lite.io.msa)."""

import gzip

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from esmfold_lite.io.msa import MSA, msa_from_rows, read_msa, select_rows

LETTERS = "ACDEFGHIKLMNPQRSTVWY"
residue = st.sampled_from(LETTERS)
match_column = st.sampled_from(LETTERS + "-")
insertion = st.text(alphabet=LETTERS.lower() + ".", max_size=3)


@st.composite
def a3m_alignment(draw):
    """(file text, expected rows): match columns upper-case or '-', insertions lower-case/'.' between them."""
    width = draw(st.integers(1, 12))
    query = draw(st.text(alphabet=LETTERS, min_size=width, max_size=width))
    hits = draw(st.lists(st.text(alphabet=LETTERS + "-", min_size=width, max_size=width), max_size=4))
    rendered = []
    for row in [query, *hits]:
        gaps = draw(st.lists(insertion, min_size=width + 1, max_size=width + 1))
        rendered.append("".join(gap + column for gap, column in zip(gaps[:-1], row, strict=True)) + gaps[-1])
    assume(any(char.islower() for row in rendered for char in row))
    text = "".join(f">seq{i} description\n{row}\n" for i, row in enumerate(rendered))
    return text, [query, *hits]


@given(a3m_alignment())
def test_a3m_insertions_are_removed(tmp_path_factory, alignment):
    text, expected = alignment
    path = tmp_path_factory.mktemp("a3m") / "x.a3m"
    path.write_text(text)
    msa = read_msa(path)
    assert list(msa.rows) == expected
    assert msa.ids == tuple(f"seq{i}" for i in range(len(expected)))
    assert msa.query == expected[0] and msa.width == len(expected[0])


@given(
    st.lists(st.text(alphabet=LETTERS + "-.", min_size=8, max_size=8), min_size=1, max_size=5),
    st.text(alphabet=LETTERS + "-.", min_size=8, max_size=8),
)
def test_aligned_fasta_gaps_and_query_gap_columns(hits, query):
    assume(any(char in LETTERS for char in query))
    msa = msa_from_rows([query, *hits])
    keep = [i for i, char in enumerate(query) if char not in "-."]
    expected = ["".join(row.replace(".", "-")[i] for i in keep) for row in [query, *hits]]
    assert list(msa.rows) == expected  # '.' is a gap without lower-case letters; query gap columns dropped
    assert "-" not in msa.query


def test_errors_name_the_file_row_and_line(tmp_path):
    path = tmp_path / "bad.a3m"
    path.write_text(">q\nMKTAYI\n>hit1\nMKTAYI\n>hit2\nMKTAY\n")
    with pytest.raises(ValueError, match=r"bad.a3m: row 'hit2' \(line 5\) has 5 alignment columns but the query has 6"):
        read_msa(path)
    path.write_text(">q\nMKTAYI\n>hit1\nMK1AYI\n")
    with pytest.raises(ValueError, match=r"row 'hit1' \(line 3\) holds '1'"):
        read_msa(path)
    path.write_text("MKT\n>q\nMKT\n")
    with pytest.raises(ValueError, match="line 1.*before the first '>'"):
        read_msa(path)
    path.write_text("")
    with pytest.raises(ValueError, match="no sequences"):
        read_msa(path)
    with pytest.raises(ValueError, match="query .* has no residues"):
        msa_from_rows(["---", "AC-"])
    with pytest.raises(ValueError, match="row 'row 2' has 2 alignment columns"):
        msa_from_rows(["ACD", "AC"])


def test_gzip_stop_codons_and_case(tmp_path):
    path = tmp_path / "x.fasta.gz"
    path.write_bytes(gzip.compress(b">q\nMKTA*\n>h\nMR-A*\n"))
    assert read_msa(path).rows == ("MKTA", "MR-A")


ROWS = ["AAAAAA", "AAAAAC", "CCCCCC", "AAACCC", "DDDDDD"]


def test_select_rows_diverse_and_first():
    msa = msa_from_rows(ROWS)
    assert select_rows(msa, None) is msa and select_rows(msa, 10) is msa
    assert select_rows(msa, 1).rows == ("AAAAAA",)
    diverse = select_rows(msa, 3)
    # query; then CCCCCC or DDDDDD (6 differences each: the earlier wins); then the row with the largest summed
    # distance to both, DDDDDD (6 + 6; AAAAAC and AAACCC have 1 + 5 and 3 + 3); rows keep file order
    assert diverse.rows == ("AAAAAA", "CCCCCC", "DDDDDD")
    assert diverse.ids == ("row 1", "row 3", "row 5")
    assert select_rows(msa, 3, "first").rows == tuple(ROWS[:3])
    with pytest.raises(ValueError, match="unknown row selection"):
        select_rows(msa, 3, "random")
    with pytest.raises(ValueError, match="at least 1"):
        select_rows(msa, 0)


@given(st.lists(st.text(alphabet="AC-", min_size=5, max_size=5), min_size=1, max_size=12), st.integers(1, 8))
def test_select_rows_properties(hits, depth):
    msa = MSA(ids=tuple(str(i) for i in range(len(hits) + 1)), rows=("AAAAA", *hits))
    for strategy in ("diverse", "first"):
        chosen = select_rows(msa, depth, strategy)
        assert chosen.depth == min(depth, msa.depth) and chosen.rows[0] == "AAAAA"
        positions = [int(i) for i in chosen.ids]
        assert positions == sorted(positions)
        assert chosen.rows == tuple(msa.rows[i] for i in positions)


@pytest.mark.parametrize("compress", [False, True])
def test_leading_comment_lines_of_colabfold_a3m_are_ignored(tmp_path, compress):
    text = "#14\t1\n# another comment\n>101\nMKTAYI\n>hit1\nMKTaAYL\n>hit2\nMR-AYI\n"
    path = tmp_path / ("x.a3m.gz" if compress else "x.a3m")
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    msa = read_msa(path)
    assert msa.ids == ("101", "hit1", "hit2") and msa.rows == ("MKTAYI", "MKTAYL", "MR-AYI")
    path.write_bytes(b"#14\t1\n>q\nMKTAYI\n>hit1\nMKTAY\n")  # line numbers still count the comment
    with pytest.raises(ValueError, match=r"row 'hit1' \(line 4\)"):
        read_msa(path)
    path.write_bytes(b">q\nMKT\n#not a comment here\n")  # only before the first header
    with pytest.raises(ValueError, match="'#'"):
        read_msa(path)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_an_a3m_in_another_encoding_reads_as_in_utf8(tmp_path, encoding):
    """The byte-order mark of UTF-8 and UTF-16/UTF-32 (with a mark, or told by the zero bytes of ASCII text) are read
    by the same opener as FASTA files; the comment line before the first header is still ignored."""
    text = "#14\t1\n>101\nMKTAYI\n>hit1\nMKTaAYL\n>hit2\nMR-AYI\n"
    path = tmp_path / "x.a3m.gz"
    path.write_bytes(gzip.compress(text.encode(encoding)))
    msa = read_msa(path)
    assert msa.ids == ("101", "hit1", "hit2") and msa.rows == ("MKTAYI", "MKTAYL", "MR-AYI")
