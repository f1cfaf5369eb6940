"""Per-protein outputs never hold NaN: strict JSON, and a prediction with nothing valid to write fails its record."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from fake_esmfold import FakeFolder, fake_prediction

from esmfold_lite.io.outputs import confidence_json, render_protein, write_files, write_summary
from esmfold_lite.pipeline import predict_fasta


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_and_non_finite_numbers_are_null():
    one = fake_prediction(["MKTAYIAK"]).select(0)
    text = confidence_json(one, "p", "p header")
    data = strict_json(text)
    assert data["plddt"] == pytest.approx(one.plddt[0].tolist(), abs=0.005)
    assert not re.search(r"\.\d{5}", text), "rounded numbers are written short, not as float32 artefacts"
    one.plddt[0, 1] = float("nan")
    one.pae[0, 0, 2] = float("inf")
    one.mean_plddt[0] = float("nan")
    text = confidence_json(one, "p", "")
    assert "NaN" not in text and "Infinity" not in text
    data = strict_json(text)
    assert data["plddt"][1] is None and data["pae"][0][2] is None and data["mean_plddt"] is None
    assert data["plddt"][0] == pytest.approx(float(one.plddt[0, 0]), abs=0.005)


def test_summary_writes_non_finite_numbers_as_empty_fields(tmp_path):
    path = tmp_path / "summary.tsv"
    write_summary(path, [{"id": "a", "mean_plddt": float("nan"), "ptm": float("inf"), "status": "ok"}])
    (row,) = csv.DictReader(path.open(newline=""), delimiter="\t")
    assert row["mean_plddt"] == "" and row["ptm"] == "" and row["status"] == "ok"


@pytest.mark.parametrize(
    ("sequences", "spoil", "reason"),
    [
        (["XXBZ"], None, "no atoms: every residue is unknown"),
        (["XX:UO"], None, "no atoms"),
        (["MKTA"], ("positions", float("nan")), "NaN or infinite values (atom coordinates)"),
        (["MKTA"], ("pae", float("inf")), "NaN or infinite values (PAE)"),
        (["MKTA"], ("ptm", float("nan")), "NaN or infinite values (pTM)"),
    ],
)
def test_a_prediction_with_nothing_valid_is_refused_and_nothing_is_written(tmp_path, sequences, spoil, reason):
    prediction = fake_prediction(sequences)
    if spoil is not None:
        getattr(prediction, spoil[0]).view(-1)[0] = spoil[1]
    with pytest.raises(ValueError, match=re.escape(reason)):
        write_files(tmp_path, "p", render_protein(prediction, 0, "p", ("pdb", "cif", "json", "npz")))
    assert list(tmp_path.iterdir()) == []


def test_an_all_unknown_record_fails_alone_in_predict(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">good\nMKTAYIAK\n>unknown\nXXXXBZ\n>dimer\nGSH:XXL\n>all_x_dimer\nXX:X\n")
    outdir = tmp_path / "out"
    results = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json", "npz"), progress=False)
    assert [r.status for r in results] == ["ok", "error", "ok", "error"]
    for failed in (results[1], results[3]):
        assert "no atoms" in failed.error and "unknown" in failed.error
        assert failed.mean_plddt is None and failed.ptm is None
        assert not list(outdir.glob(f"{failed.id}.*"))
    summary = (outdir / "summary.tsv").read_text()
    assert "nan" not in summary.lower()
    for name in ("good", "dimer"):
        data = strict_json(Path(outdir / f"{name}.json").read_text())
        assert data["mean_plddt"] > 0 and None not in data["plddt"]
