import gzip
import io
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmfold_lite.io.fasta import (
    FastaRecord,
    count_records,
    read_fasta,
    resolve_inside,
    safe_filename,
    text_encoding,
    unique_ids,
    validate_record,
)
from esmfold_lite.sequences import AMINO_ACID_LETTERS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "proteins.fasta"


def parse(text: str) -> list[FastaRecord]:
    return list(read_fasta(io.StringIO(text)))


def test_basic_multiline_record_and_description():
    (rec,) = parse(">sp|P1|X_HUMAN  Some protein OS=Homo\nMKV\nLLA\n")
    assert rec.id == "sp|P1|X_HUMAN"
    assert rec.description == "Some protein OS=Homo"
    assert rec.sequence == "MKVLLA"
    assert rec.line == 1
    assert validate_record(rec) is None


def test_lenient_formatting():
    text = "\ufeff>a\r\nmk v\t*\r\n\r\n\r\n  >b desc\r\n  acd  \r\nEFG*\r\n"
    a, b = parse(text)
    assert (a.id, a.sequence, a.line) == ("a", "MKV", 1)
    assert (b.id, b.description, b.sequence, b.line) == ("b", "desc", "ACDEFG", 5)
    assert validate_record(a) is None and validate_record(b) is None


def test_multi_chain():
    (rec,) = parse(">ab\nGIVEQ*:fvnq\n")
    assert rec.sequence == "GIVEQ:FVNQ"
    assert rec.chains == ["GIVEQ", "FVNQ"]
    assert rec.num_residues == 9
    assert validate_record(rec) is None
    assert "empty chain 2 of 3" in validate_record(parse(">x\nAAA::CC\n")[0])
    assert "empty chain 1, 2 of 2" in validate_record(parse(">x\n:\n")[0])


def test_rejections():
    empty, star, digits, gaps, long = parse(">e\n>s\n*\n>d\nMK1V2\n>g\nAC-D.E\n>l\nACDEFGHIK\n")
    assert validate_record(empty) == "empty sequence"
    assert validate_record(star) == "empty sequence"
    reason = validate_record(digits)
    assert "'1' at 3" in reason and "'2' at 5" in reason
    assert "'-' at 3" in validate_record(gaps) and "'.' at 5" in validate_record(gaps)
    assert validate_record(long, max_length=9) is None
    assert "more than the maximum length 8" in validate_record(long, max_length=8)
    (multi,) = parse(">m\nAAA:AB1\n")
    assert "'1' at 2:3" in validate_record(multi)


def test_reason_is_one_short_line():
    (rec,) = parse(">x\n" + "1\t" * 50 + "\x00\n")
    reason = validate_record(rec)
    assert "and 46 more" in reason
    assert "\t" not in reason and "\n" not in reason and "\x00" not in reason
    assert len(reason) < 300


def test_letter_policy():
    (rec,) = parse(">x\nACDEFGHIKLMNPQRSTVWYXBZUO\n")
    assert validate_record(rec) is None
    assert AMINO_ACID_LETTERS == set("ACDEFGHIKLMNPQRSTVWYXBZUO")
    assert validate_record(parse(">x\nAJA\n")[0]) is not None
    assert validate_record(parse(">x\nA*A\n")[0]) is not None  # only a trailing stop is accepted


def test_parse_errors_are_record_level():
    orphan, ok, no_id = parse("MKV\nLL\n>ok\nAAA\n>\nCCC\n>  \nDDD\n")[:3]
    assert orphan.line == 1 and "before the first '>'" in validate_record(orphan)
    assert validate_record(ok) is None
    assert no_id.line == 5 and validate_record(no_id) == "header line has no id"


def test_undecodable_bytes_reject_only_that_record():
    data = b">a\nMKV\n>b\nMK\xff\xfeV\n>c\nAAA\n"
    a, b, c = read_fasta(io.BytesIO(data))
    assert validate_record(a) is None and validate_record(c) is None
    assert "'\\ufffd' at 3" in validate_record(b)


def test_paths_gzip_and_empty(tmp_path):
    plain = tmp_path / "x.fasta"
    plain.write_bytes(b">a\nMKV\n")
    packed = tmp_path / "x.fa.gz"
    packed.write_bytes(gzip.compress(b">a\nMKV\n"))
    assert list(read_fasta(plain)) == list(read_fasta(str(packed))) == [FastaRecord("a", "", "MKV", 1)]
    empty = tmp_path / "empty.fasta"
    empty.write_text("\n\n")
    assert list(read_fasta(empty)) == []
    with pytest.raises(OSError):
        list(read_fasta(tmp_path / "missing.fasta"))
    truncated = tmp_path / "t.fa.gz"
    truncated.write_bytes(gzip.compress(b">a\nMKV\n" * 1000)[:-30])
    with pytest.raises(OSError, match="gzip"):
        list(read_fasta(truncated))
    corrupt = tmp_path / "c.fa.gz"
    corrupt.write_bytes(gzip.compress(b">a\nMKV\n")[:12] + b"garbage" * 10)
    with pytest.raises(OSError):
        list(read_fasta(corrupt))


def test_reader_is_streaming():
    def lines():
        yield ">a\n"
        yield "MKV\n"
        yield ">b\n"
        raise AssertionError("read past the second header before yielding the first record")

    assert next(read_fasta(lines())).sequence == "MKV"


def test_examples_file_is_valid():
    records = list(read_fasta(EXAMPLES))
    assert [r.id for r in records] == ["ubiquitin_human", "gb1", "insulin_human"]
    assert [r.num_residues for r in records] == [76, 56, 51]
    assert [len(r.chains) for r in records] == [1, 1, 2]
    assert all(validate_record(r) is None for r in records)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(list(">\n\r\t :*-.1aAmMkKX\x00\ufeff\u00e9") + ["\r\n", ">>", ">id "])))
def test_arbitrary_text_never_crashes(pieces):
    text = "".join(pieces)
    records = parse(text)
    for rec in records:
        reason = validate_record(rec, max_length=5)
        assert reason is None or (reason and "\n" not in reason)
    assert list(read_fasta(io.BytesIO(text.encode("utf-8", "surrogatepass")))) == records


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    for rec in read_fasta(io.BytesIO(data)):
        validate_record(rec)


ids = st.text(min_size=1, max_size=20).filter(lambda s: s.split() == [s])  # one header word
chains = st.lists(st.text(alphabet=sorted(AMINO_ACID_LETTERS), min_size=1, max_size=80), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(ids, st.sampled_from(["", "a description", "x:y  z"]), chains), max_size=5),
    st.integers(1, 70),
    st.booleans(),
)
def test_round_trip(entries, width, crlf):
    newline = "\r\n" if crlf else "\n"
    text = ""
    for id_, description, seq_chains in entries:
        sequence = ":".join(seq_chains)
        text += f">{id_} {description}".rstrip() + newline
        text += "".join(sequence[i : i + width] + newline for i in range(0, len(sequence), width))
    records = parse(text)
    assert [(r.id, r.description, r.chains) for r in records] == [(i, d, c) for i, d, c in entries]
    assert all(validate_record(r) is None for r in records)


# --- text encodings ----------------------------------------------------------------------------------------------

WITH_MARK = ("utf-8-sig", "utf-16", "utf-32")  # Python writes the byte-order mark for these
WITHOUT_MARK = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
ascii_ids = st.text(alphabet=[chr(c) for c in range(33, 127)], min_size=1, max_size=20)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.data(),
    st.sampled_from(WITH_MARK + WITHOUT_MARK),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(["", "a description", "x:y  z"]), chains), min_size=1, max_size=4),
)
def test_every_encoding_parses_to_the_records_of_utf8(tmp_path_factory, data, encoding, compress, entries):
    """A FASTA in UTF-8 with a byte-order mark, UTF-16 or UTF-32 (with a mark, or without one: told by the zero
    bytes of ASCII text), gzip-compressed or not, reads as the same records as the plain UTF-8 file; so does
    count_records."""
    names = ids if encoding in WITH_MARK else ascii_ids  # without a mark the file starts as ASCII text
    text = "".join(
        f">{data.draw(names)} {description}".rstrip() + "\n" + ":".join(seq_chains) + "\n"
        for description, seq_chains in entries
    )
    folder = tmp_path_factory.mktemp("enc")
    plain, other = folder / "plain.fasta", folder / ("other.fasta.gz" if compress else "other.fasta")
    plain.write_bytes(text.encode("utf-8"))
    encoded = text.encode(encoding)
    other.write_bytes(gzip.compress(encoded) if compress else encoded)
    expected = list(read_fasta(plain))
    assert list(read_fasta(other)) == expected and len(expected) == len(entries)
    assert all(validate_record(r) is None for r in expected)
    assert count_records(other) == count_records(plain) == len(entries)
    assert text_encoding(encoded[:64]) == encoding


def test_utf16_is_logged_and_utf8_is_not(tmp_path, caplog):
    utf16, bom = tmp_path / "u16.fasta", tmp_path / "bom.fasta"
    utf16.write_text(">a\nMKV\n", encoding="utf-16")
    bom.write_text(">a\nMKV\n", encoding="utf-8-sig")
    with caplog.at_level(logging.INFO, logger="esmfold_lite.io.fasta"):
        assert list(read_fasta(utf16)) == list(read_fasta(bom)) == [FastaRecord("a", "", "MKV", 1)]
    (message,) = caplog.messages
    assert f"{utf16} is UTF-16 (with a byte-order mark) text" in message


@pytest.mark.parametrize(
    "head",
    [b">p\x00q\nMKT\n", ">\u03b1\u03b2\u03b3 protein\nMKT\n".encode(), b"", b">", b"\x00\x00\x00\x00", b">a\x00"],
)
def test_utf8_with_a_nul_or_letters_beyond_ascii_stays_utf8(head):
    assert text_encoding(head) == "utf-8"


# --- output names ------------------------------------------------------------------------------------------------


def test_safe_filename_examples():
    assert safe_filename("P69905") == "P69905"
    assert safe_filename("my_protein-1.v2") == "my_protein-1.v2"
    traversal = safe_filename("../../etc/passwd")
    assert "/" not in traversal and not traversal.startswith(".") and ".." not in traversal
    assert safe_filename("sp|P69905|HBA_HUMAN").startswith("sp_P69905_HBA_HUMAN_")
    assert safe_filename("a|b") != safe_filename("a?b")  # the hash keeps distinct ids apart
    for reserved in ("CON", "nul", "Com1", "lpt9.pdb", "aux.tar.gz"):
        name = safe_filename(reserved)
        assert name.split(".")[0].upper() not in {"CON", "NUL", "COM1", "LPT9", "AUX"}
    assert safe_filename("").startswith("unnamed_")
    assert safe_filename("...").startswith("unnamed_")
    assert safe_filename(".hidden").startswith("hidden_")
    long = safe_filename("A" * 500)
    assert len(long) == 100 and long != safe_filename("A" * 501)
    assert len(safe_filename("A" * 500, max_len=20)) == 20
    with pytest.raises(ValueError):
        safe_filename("x", max_len=5)


def test_unique_ids_examples():
    assert unique_ids(["a", "a", "A", "a_2", "b"]) == ["a", "a_2", "A_3", "a_2_2", "b"]
    assert unique_ids(["x"] * 4) == ["x", "x_2", "x_3", "x_4"]
    names = unique_ids(["A" * 200] * 12, max_len=30)
    assert len(set(names)) == 12 and all(len(n) <= 30 for n in names)


def test_resolve_inside(tmp_path):
    assert resolve_inside(tmp_path, "a.pdb") == tmp_path.resolve() / "a.pdb"
    for bad in ("../x", "/etc/passwd", "..", ".", "", "a/../../x", "a\x00b"):
        with pytest.raises(ValueError):
            resolve_inside(tmp_path, bad)
    outside = tmp_path / "outside.txt"
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "link.pdb").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        resolve_inside(outdir, "link.pdb")


def _is_single_safe_component(name: str, max_len: int) -> bool:
    return (
        0 < len(name) <= max_len
        and name not in (".", "..")
        and not name.startswith((".", "-"))
        and not name.endswith(".")
        and ".." not in name
        and all(c.isascii() and (c.isalnum() or c in "._-+") for c in name)
        and os.path.basename(name) == name
    )


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=300), st.integers(10, 120))
def test_safe_filename_is_a_safe_component(id_, max_len):
    name = safe_filename(id_, max_len)
    assert _is_single_safe_component(name, max_len)
    assert safe_filename(id_, max_len) == name  # deterministic
    assert safe_filename(name, max_len) == name  # idempotent


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_safe_names_stay_inside_and_can_be_created(tmp_path_factory, id_):
    outdir = tmp_path_factory.mktemp("out")
    for name in (safe_filename(id_), safe_filename(id_) + ".pdb", id_):
        try:
            target = resolve_inside(outdir, name)
        except ValueError:
            assert name == id_  # only the raw id may be refused
            continue
        assert target.is_relative_to(outdir.resolve()) and target != outdir.resolve()
    target = resolve_inside(outdir, safe_filename(id_) + ".pdb")
    assert target.parent == outdir.resolve()
    target.write_text("x")
    assert [p.name for p in outdir.iterdir()] == [target.name]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.text(max_size=40), max_size=30), st.integers(16, 60))
def test_unique_ids_are_distinct_case_insensitively(id_list, max_len):
    names = unique_ids(id_list, max_len)
    assert len(names) == len(id_list)
    assert len({n.lower() for n in names}) == len(names)
    assert all(_is_single_safe_component(n, max_len) for n in names)
    assert unique_ids(id_list, max_len) == names
