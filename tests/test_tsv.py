"""Text in the TSV files esmfold-lite writes: one escaping rule (``io.tsv``), read back exactly, one line per row."""

from __future__ import annotations

import json
import re

from fake_esmfold import FakeFolder
from hypothesis import given
from hypothesis import strategies as st

from esmfold_lite.io.summary_tsv import SUMMARY_COLUMNS, read_summary, write_summary
from esmfold_lite.io.tsv import escape_field, unescape_field
from esmfold_lite.pipeline import predict_fasta

# arbitrary text, with the characters the rule is about (and look-alikes of its escapes) drawn often
HOSTILE = st.text(
    st.one_of(st.characters(), st.sampled_from("\\\t\n\r\0\x01\x0b\x0c\x1b\x1c\x7f\x85\x9f\u2028\u2029x0tu"))
)
_UNESCAPED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # all the rule escapes, but the tab itself


@given(HOSTILE)
def test_a_field_is_one_line_without_tabs_and_reads_back_exactly(text):
    field = escape_field(text)
    assert "\t" not in field and not _UNESCAPED.search(field) and len(field.splitlines() or [""]) == 1
    assert unescape_field(field) == text


def test_the_escapes_are_the_stated_ones():
    assert escape_field('a\tb\nc\rd\0e\\f\x01g\x7fh\x85i\u2028j é "q"') == (
        'a\\tb\\nc\\rd\\0e\\\\f\\x01g\\x7fh\\x85i\\u2028j é "q"'
    )
    assert unescape_field("a\\qb\\x4") == "a\\qb\\x4", "a backslash of no escape (hand-edited) stays"


@given(st.lists(st.tuples(HOSTILE.filter(bool), HOSTILE, HOSTILE), min_size=1, max_size=4))
def test_summary_rows_with_any_text_are_one_line_each_and_read_back_exactly(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("summary") / "summary.tsv"
    rows = [
        {
            "id": id,
            "length": 3,
            "mean_plddt": 71.25,
            "status": "error",
            "error": error,
            "notes": error,
            "header": header,
        }
        for id, header, error in texts
    ]
    write_summary(path, rows)
    data = path.read_bytes().decode("utf-8")
    lines = data.split("\n")
    assert lines[-1] == "" and len(lines) == len(rows) + 2 and len(data.splitlines()) == len(rows) + 1
    for line in lines[:-1]:
        assert line.count("\t") == len(SUMMARY_COLUMNS) - 1 and not _UNESCAPED.search(line)
    read = read_summary(path)
    assert [(row["id"], row["header"], row["error"], row["notes"]) for row in read] == [
        (id, header, error, error) for id, header, error in texts
    ]
    assert [row["mean_plddt"] for row in read] == ["71.25"] * len(rows)


def test_predict_escapes_a_hostile_header_in_summary_and_keeps_it_exact_in_json(tmp_path):
    header = 'p\x01q desc\twith tabs\x00nul \\back\\slash \x0bvt\x1b[31mred \u2028ls \x85nel "q" é'
    fasta = tmp_path / "in.fasta"
    fasta.write_bytes(b">" + header.encode() + b"\nMKTAYIAK\n>plain\nGSHM\n")
    outdir = tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("json",), progress=False)
    lines = (outdir / "summary.tsv").read_bytes().decode().split("\n")
    assert len(lines) == 4 and all(line.count("\t") == len(SUMMARY_COLUMNS) - 1 for line in lines[:-1])
    assert "p\\x01q desc\\twith tabs\\0nul \\\\back\\\\slash \\x0bvt\\x1b[31mred \\u2028ls \\x85nel" in lines[1]
    rows = read_summary(outdir / "summary.tsv")
    assert [row["header"] for row in rows] == [header, "plain"]
    (name,) = [row["id"] for row in rows if row["header"] == header]
    assert json.loads((outdir / f"{name}.json").read_text())["header"] == header
