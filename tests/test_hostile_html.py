"""Hostile text in the HTML report and the notebook views stays text: FASTA ids and descriptions, summary ids,
statuses, errors and notes, file names, REMARK lines and chain ids of structure files.

Each payload sets ``window.__pwned``. The fast tests parse the HTML as a browser's tokenizer splits it (no tag,
event-handler attribute, link or script comes from the data; JSON and py3Dmol scripts hold no ``<``; bidi controls
are shown as marks); the slow one opens the report and a notebook page in headless Chromium with the network off
and checks that no payload ran, that every id is text in the DOM and that the 3D views were still drawn.
"""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fake_esmfold import FakeFolder, fake_prediction
from test_report_browser import THREEDMOL_JS, _chromium, run_chromium

from esmfold_lite import predict_fasta, viz
from esmfold_lite.io.structure import load_structure, to_mmcif_string
from esmfold_lite.io.summary_tsv import read_summary, write_summary
from esmfold_lite.pipeline import SUMMARY_NAME
from esmfold_lite.viz.escaping import BIDI_CONTROLS, escape_script, show_bidi_controls
from esmfold_lite.viz.report import threedmol_cdn_url, threedmol_script, write_report
from esmfold_lite.viz.view import MAX_HTML_VIEWS, view_commands

HOSTILE = (
    "<script>__pwned=1</script>",
    "x</script><script>__pwned=1</script>",
    '"><img src=x onerror="__pwned=1">',
    "'><svg onload=__pwned=1>",
    "javascript:__pwned=1",
    "<a href=javascript:__pwned=1>go</a>",
    "<!--<script>__pwned=1//",
    "</SCRIPT><script>__pwned=1</script>",
    "doc\u202efdp.exe",  # shows as "docexe.pdf" unless the control is made visible
    "\u2067rtl\u2069 &amp; \u2028\u2029",
)  # at most 40 characters each: the notebook table shortens longer sequences
HOSTILE_NAME = '"><img src=x onerror=__pwned=1>\u202e'  # an id of a hand-edited summary, and its files' names
HOSTILE_CHAINS = ("</script><script>__pwned=1</script>", "\u202eB<!--")  # mmCIF chain ids may be any text
MONOMER = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQ"
COMPLEX = "MKTAYIAKQRQISFVKSHFSRQ:GSHMLEDPVDAFQ"
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "div", "span", "input",
               "label", "table", "thead", "tbody", "tr", "th", "td", "a", "main", "section", "img", "script"}
NOTEBOOK_TAGS = {"div", "p", "br", "table", "tr", "th", "td", "script"}
WATCH = (  # after the page loaded (its scripts ran, its images failed) and a second more: was any payload run?
    '<script>addEventListener("load", () => setTimeout(() => { document.body.dataset.pwned = String(window.__pwned); '
    "}, 1000));</script>"
)


class PageAudit(HTMLParser):
    """A page as a browser's tokenizer splits it: its start tags with their attributes, the contents of its scripts
    (with their attributes) and its text outside scripts and styles (character references decoded)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.chunks: list[str] = []
        self._raw: tuple[str, dict[str, str], list[str]] | None = None  # open script or style
        self.feed(page)
        self.close()

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag in ("script", "style"):
            self._raw = (tag, attributes, [])

    def handle_endtag(self, tag: str) -> None:
        if self._raw is not None and tag == self._raw[0]:
            if tag == "script":
                self.scripts.append((self._raw[1], "".join(self._raw[2])))
            self._raw = None

    def handle_data(self, data: str) -> None:
        (self._raw[2] if self._raw is not None else self.chunks).append(data)


def assert_inert(audit: PageAudit) -> None:
    """No event-handler attribute, no ``javascript:`` value, no link or source but the page's own."""
    for tag, attrs in audit.tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        assert not [value for value in attrs.values() if value.strip().lower().startswith("javascript:")], (tag, attrs)
        assert re.fullmatch(r"#p\d+", attrs.get("href", "#p1")), (tag, attrs)
        src = attrs.get("src")
        assert src is None or src.startswith("data:image/png;base64,") or src == threedmol_cdn_url(), (tag, attrs)


def hostile_pdb() -> str:
    """PDB text with a REMARK line that would close the script a viewer puts it in."""
    return "REMARK 999 </script><script>__pwned=1</script>\n" + fake_prediction([MONOMER]).to_pdb(0)


def hostile_cif() -> str:
    """mmCIF text of a two-chain structure whose chain ids are ``HOSTILE_CHAINS``."""
    atoms = fake_prediction([COMPLEX]).to_atom_array(0)
    atoms.set_annotation("chain_id", np.where(atoms.chain_id == "A", *HOSTILE_CHAINS))
    return to_mmcif_string(atoms)


@pytest.fixture
def hostile_run(tmp_path) -> tuple[Path, list[dict[str, str]]]:
    """OUTDIR of a ``predict`` run (fake folder) of a FASTA with hostile ids, descriptions and a hostile sequence,
    whose summary.tsv was then edited by hand: rows with hostile ids, statuses, errors and notes, and an ok row
    ``HOSTILE_NAME`` whose mmCIF file has hostile chain ids. Returns OUTDIR and the rows of its summary."""
    fasta = tmp_path / "hostile.fasta"
    records = [f">{''.join(text.split())} {text}\n{MONOMER[: 8 + k]}\n" for k, text in enumerate(HOSTILE)]
    fasta.write_text("".join(records) + ">bad-sequence <b>x</b>\nMK<script>__pwned=1</script>\n", encoding="utf-8")
    outdir = tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json"), progress=False)
    (outdir / f"{HOSTILE_NAME}.cif").write_text(hostile_cif(), encoding="utf-8")
    summary = outdir / SUMMARY_NAME
    edited = [{"id": HOSTILE_NAME, "length": 35, "status": "ok", "notes": HOSTILE[2]}]
    edited += [{"id": text, "status": "error", "error": text, "notes": text} for text in HOSTILE]
    edited.append({"id": "odd-status", "status": HOSTILE[2]})
    write_summary(summary, edited + read_summary(summary))
    return outdir, read_summary(summary)


@pytest.fixture
def hostile_views(tmp_path) -> dict[str, str]:
    """HTML of notebook views showing hostile text: a Prediction whose sequences field holds ``HOSTILE`` (as a
    hand-made one may), and ``viz.show`` of a PDB file with a hostile REMARK, of that PDB text and of an mmCIF file
    with hostile chain ids."""
    pred = fake_prediction([MONOMER[: 8 + k] for k in range(len(HOSTILE))])
    pdb_path, cif_path = tmp_path / "remark.pdb", tmp_path / "chains.cif"
    pdb_path.write_text(hostile_pdb(), encoding="utf-8")
    cif_path.write_text(hostile_cif(), encoding="utf-8")
    return {
        "prediction": dataclasses.replace(pred, sequences=list(HOSTILE))._repr_html_(),
        "pdb": viz.show(pdb_path).write_html(),
        "pdb text": viz.show(hostile_pdb()).write_html(),
        "cif": viz.show(cif_path, color="chain").write_html(),
    }


def test_report_keeps_hostile_text_inert(hostile_run):
    outdir, rows = hostile_run
    page = write_report(outdir).read_text(encoding="utf-8")
    audit = PageAudit(page)
    assert_inert(audit)
    assert {tag for tag, _ in audit.tags} <= REPORT_TAGS
    assert not BIDI_CONTROLS.search(page)

    scripts = [code for attrs, code in audit.scripts if attrs.get("type") != "application/json" and "src" not in attrs]
    assert len(scripts) == 1 and "IntersectionObserver" in scripts[0]  # report.js alone
    payloads = [code for attrs, code in audit.scripts if attrs.get("type") == "application/json"]
    assert len(payloads) == 1 + len(HOSTILE)  # the hand-added mmCIF and the folded records
    assert not [code for code in payloads if "<" in code or "\u2028" in code or "\u2029" in code]
    structures = {payload["name"]: payload for payload in map(json.loads, payloads)}
    labels = [args[0] for method, args in structures[f"{HOSTILE_NAME}.cif"]["commands"] if method == "addLabel"]
    assert labels == [f"chain {show_bidi_controls(chain)}" for chain in HOSTILE_CHAINS]

    text = audit.text
    for row in rows:  # every id, error and note is text, its bidi controls visible
        assert show_bidi_controls(row["id"]) in text, row["id"]
        assert show_bidi_controls(row["error"]) in text and show_bidi_controls(row["notes"]) in text
    assert "doc[U+202E]fdp.exe" in text and f"{show_bidi_controls(HOSTILE_NAME)}.cif" in text
    assert "'&lt;' at 3" not in text and "'<' at 3" in text  # the hostile sequence's error, decoded once


def test_notebook_views_keep_hostile_text_inert(hostile_views, tmp_path):
    for name, page in hostile_views.items():
        audit = PageAudit(page)
        assert_inert(audit)
        assert {tag for tag, _ in audit.tags} <= NOTEBOOK_TAGS, name
        assert not BIDI_CONTROLS.search(page), name
        views = MAX_HTML_VIEWS if name == "prediction" else 1
        assert len(audit.scripts) == views, name  # nothing closed a view's script and opened another
        assert not [code for _, code in audit.scripts if "<" in code], name  # every '<' of the data is \u003c
    assert "\\u003c/script>\\u003cscript>__pwned=1\\u003c/script>" in hostile_views["pdb"]  # the REMARK, in a string
    assert all(show_bidi_controls(text) in PageAudit(hostile_views["prediction"]).text for text in HOSTILE)

    (tmp_path / "chains.cif").write_text(hostile_cif(), encoding="utf-8")
    atoms = load_structure(tmp_path / "chains.cif", extra_fields=("b_factor",))
    labels = [args[0] for method, args in view_commands(atoms) if method == "addLabel"]
    assert labels == ["chain </script><script>__pwned=1</script>", "chain [U+202E]B<!--"]
    assert escape_script(json.dumps(labels[1])) in hostile_views["cif"]  # drawn on the canvas, the control visible


@pytest.mark.slow
def test_hostile_text_stays_text_in_chromium(tmp_path, hostile_run, hostile_views):
    chromium = _chromium()
    outdir, rows = hostile_run
    report = write_report(outdir, threedmol_js=THREEDMOL_JS).read_text(encoding="utf-8")
    notebook = "".join(hostile_views[name] for name in ("prediction", "pdb", "cif"))
    pages = {  # the watch comes first: whatever the data does to the rest of the page, it reports
        "report": report.replace("<head>", "<head>" + WATCH, 1),
        "notebook": f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">{WATCH}{threedmol_script(THREEDMOL_JS)}'
        f"<script>var $3Dmolpromise = Promise.resolve();</script></head>"  # py3Dmol: 3Dmol.js is loaded
        f"<body>{notebook}</body></html>",
    }
    doms = {}
    for name, page in pages.items():
        path = tmp_path / f"{name}.html"
        path.write_text(page, encoding="utf-8")
        doms[name] = run_chromium(chromium, path.as_uri(), tmp_path / f"profile-{name}", "--dump-dom").stdout

    for name, dom in doms.items():
        assert re.search(r'<body[^>]* data-pwned="undefined"', dom), name  # the watch ran; no payload did
        assert_inert(PageAudit(dom))
    report_text = PageAudit(doms["report"]).text
    assert all(show_bidi_controls(row["id"]) in report_text for row in rows)
    assert re.search(r'<div class="viewer" data-structure="s1" data-rendered="true">\s*<canvas', doms["report"])
    assert 'class="placeholder">3D view failed' not in doms["report"]  # the hostile chain ids' view was drawn
    notebook_text = PageAudit(doms["notebook"]).text
    assert all(show_bidi_controls(text) in notebook_text for text in HOSTILE)
    viewers = re.findall(r'<div id="3dmolviewer_\d+"', doms["notebook"])
    assert len(viewers) == MAX_HTML_VIEWS + 2
    assert '<p id="3dmolwarning_' not in doms["notebook"]  # every view's script ran and removed its warning
    assert doms["notebook"].count("<canvas") == len(viewers)
