"""``esmfold-lite report``: the HTML holds every protein of a run, its structure, plots and 3D-view colours; whatever a
run lacks is said, not fatal. (The page itself is opened in a browser by ``test_report_browser.py``.)"""

from __future__ import annotations

import base64
import gzip
import inspect
import json
import re
from pathlib import Path

import numpy as np
import py3Dmol
import pytest
from fake_esmfold import FakeFolder
from test_predict_cli import write_fasta

from esmfold_lite import predict_fasta
from esmfold_lite.cli import build_parser, main
from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.io.structure import load_structure
from esmfold_lite.viz import report
from esmfold_lite.viz.report import _confidence_from_json, protein_page, write_report
from esmfold_lite.viz.view import view_commands

RECORDS = {"ubq": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
           "pair": "MKTAYIAKQRQISFVKSHFSRQ:GSHMLEDPVDAFQ", "bad": "MKT4Y"}  # fmt: skip


def run(tmp_path: Path, formats=("pdb", "json"), records=RECORDS) -> Path:
    outdir = tmp_path / "out"
    predict_fasta(write_fasta(tmp_path / "in.fasta", records), outdir, model=FakeFolder(), formats=formats,
                  progress=False)  # fmt: skip
    return outdir


def table_rows(page: str) -> list[tuple[str, str, str]]:
    """(status, id, error) of each table row."""
    rows = re.findall(r'<tr class="status-(\w+)">.*?<a href="#p\d+">(.*?)</a>.*?<td>([^<]*)</td></tr>', page)
    return [(status, name, error) for status, name, error in rows]


def structure_payloads(page: str) -> dict[str, dict]:
    return {
        payload["name"]: payload
        for payload in map(json.loads, re.findall(r'<script type="application/json" id="s\d+">(.*?)</script>', page))
    }


def test_report_holds_every_protein_its_structure_plots_and_colours(tmp_path):
    outdir = run(tmp_path)
    (outdir / "bad.pdb").write_bytes((outdir / "ubq.pdb").read_bytes())  # left from another run: not shown
    path = write_report(outdir)
    assert path == outdir / "report.html"
    page = path.read_text()

    rows = table_rows(page)
    assert [(status, name) for status, name, _ in rows] == [("ok", "ubq"), ("ok", "pair"), ("error", "bad")]
    assert "&#x27;4&#x27; at 4" in rows[2][2]  # the failure and its reason are in the table
    assert '<section class="protein status-error" id="p3">' in page
    assert '<p class="header">ubq</p>' in page  # the FASTA header

    payloads = structure_payloads(page)
    assert sorted(payloads) == ["pair.pdb", "ubq.pdb"]
    for name, payload in payloads.items():
        assert gzip.decompress(base64.b64decode(payload["data"])) == (outdir / name).read_bytes()
        atoms = load_structure(outdir / name, extra_fields=("b_factor",))
        assert payload["format"] == "pdb"
        assert payload["commands"] == json.loads(json.dumps(view_commands(atoms)))
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)

    # 3Dmol.js from the CDN build py3Dmol uses, and nothing else from the network
    cdn = inspect.signature(py3Dmol.view).parameters["js"].default
    assert re.findall(r'<script src="([^"]+)"', page) == [cdn]
    assert page.count("https://") == 1


def test_chain_boundaries_come_from_the_json_sequence(tmp_path):
    outdir = run(tmp_path)
    json_page = protein_page(outdir, {"id": "pair", "status": "ok", "mean_plddt": "50", "ptm": "0.5"})
    assert json_page.plot_png is not None and not json_page.problems and not json_page.notes
    confidence = _confidence_from_json(outdir / "pair.json")
    assert confidence.chain_index.tolist() == [0] * 22 + [1] * 13
    assert confidence.pae.shape == (35, 35)


def test_report_shows_what_exists(tmp_path, caplog):
    outdir = run(tmp_path, formats=("cif",))  # no PDB, no JSON: structure from mmCIF, pLDDT from its B-factors
    (outdir / "pair.cif").unlink()
    assert main(["report", str(outdir), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert [name for _, name, _ in table_rows(page)] == ["ubq", "pair", "bad"]
    assert sorted(structure_payloads(page)) == ["ubq.cif"]
    assert structure_payloads(page)["ubq.cif"]["format"] == "cif"
    assert "no PAE: predict writes it with --formats json, npz or pae" in page
    assert "no structure file (.pdb or .cif) in the output directory" in page  # pair: its file was deleted
    assert len(re.findall(r'src="data:image/png', page)) == 1  # ubq's pLDDT plot (from the mmCIF B-factors)
    assert any("pair" in m and "no structure file" in m for m in caplog.messages)

    (outdir / "ubq.json").write_text("{not json")
    page = protein_page(outdir, {"id": "ubq", "status": "ok"})
    assert page.problems and page.problems[0].startswith("cannot read ubq.json: JSONDecodeError")
    assert page.plot_png is not None  # still plotted from the structure

    (outdir / "ubq.cif").write_text("data_broken\n_atom_site.id\n")
    page = protein_page(outdir, {"id": "ubq", "status": "ok"})
    assert any(p.startswith("cannot read ubq.cif") for p in page.problems)
    assert not any("no structure file" in p for p in page.problems), "an unreadable file is not also called missing"


def test_without_json_the_pae_comes_from_the_alphafold_db_pae_file(tmp_path, monkeypatch):
    records = {"pair": RECORDS["pair"], "unknown": "MKTXAYIAK"}
    outdir = run(tmp_path, formats=("cif", "pae"), records=records)
    plotted, draw = [], report.confidence_figure

    def capture(*args, **kwargs):
        plotted.append(args)
        return draw(*args, **kwargs)

    monkeypatch.setattr(report, "confidence_figure", capture)
    page = protein_page(outdir, {"id": "pair", "status": "ok"})
    assert page.plot_png is not None and not page.problems and not page.notes
    plddt, pae, chain_index = plotted.pop()
    np.testing.assert_array_equal(pae, read_afdb_pae(outdir / "pair_predicted_aligned_error_v1.json"))
    assert chain_index.tolist() == [0] * 22 + [1] * 13 and len(plddt) == 35  # chains and pLDDT from the mmCIF

    page = protein_page(outdir, {"id": "unknown", "status": "ok"})  # X has no atoms: the PAE does not fit
    assert page.problems == [
        "cannot read unknown_predicted_aligned_error_v1.json: its PAE covers 9 residues, the structure 8 (it leaves "
        "out unknown ones)"]  # fmt: skip
    assert plotted.pop()[1] is None and page.notes == ["no PAE: predict writes it with --formats json, npz or pae"]

    assert main(["report", str(outdir)]) == 0  # the command reads it too: both proteins plotted
    assert len(re.findall(r'src="data:image/png', (outdir / "report.html").read_text())) == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_summary", "summary.tsv not found: give the output directory of a finished esmfold-lite predict run"),
        ("empty_summary", "lists no proteins"),
        ("missing_js", "cannot read 3Dmol.js from"),
        ("not_3dmol", "is not 3Dmol.js"),
    ],
)
def test_report_errors_are_one_line_and_exit_1(tmp_path, capsys, setup, message):
    outdir = tmp_path / "out"
    outdir.mkdir()
    argv = ["report", str(outdir)]
    if setup != "no_summary":
        (outdir / "summary.tsv").write_text("id\tlength\tmean_plddt\tptm\tstatus\n" + ("" if setup == "empty_summary"
                                            else "p\t3\t50\t0.5\tok\n"))  # fmt: skip
    if setup == "missing_js":
        argv += ["--3dmol-js", str(tmp_path / "3Dmol-min.js")]
    elif setup == "not_3dmol":
        (tmp_path / "other.js").write_text("console.log('hello');")
        argv += ["--3dmol-js", str(tmp_path / "other.js")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("esmfold-lite report: error: ") and message in err[-1]
    assert not (outdir / "report.html").exists()


def test_local_3dmol_is_embedded(tmp_path):
    outdir = run(tmp_path)
    library = tmp_path / "3Dmol-min.js"
    library.write_text("var $3Dmol = {}; /* '</script>' in a string */")
    path = write_report(outdir, threedmol_js=library)
    page = path.read_text()
    assert "<script src=" not in page and "https://" not in page
    assert "var $3Dmol = {}; /* '<\\/script>' in a string */" in page


def test_help_explains_every_flag(capsys):
    parser = next(a for a in build_parser()._actions if a.dest == "command").choices["report"]
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[-1] for a in options} == {"--output", "--3dmol-js", "--jobs", "--verbose", "--quiet"}
    assert all(len(a.help) > 15 for a in options)


@pytest.mark.slow
def test_worker_processes_write_the_same_report(tmp_path):
    records = {f"p{k}": "MKTAYIAKQRGSHMLE"[: 6 + k % 10] + ":MKV" * (k % 2) for k in range(34)}
    outdir = run(tmp_path, records=records)
    serial = write_report(outdir, tmp_path / "serial.html", jobs=1).read_text()
    parallel = write_report(outdir, tmp_path / "parallel.html", jobs=2).read_text()
    assert serial == parallel and len(table_rows(serial)) == 34
