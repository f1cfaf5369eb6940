"""Per-protein outputs never hold NaN: strict JSON, and a prediction with nothing valid to write fails its record."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import gemmi
import numpy as np
import pytest
from fake_esmfold import FakeFolder, fake_prediction

import esmfold_lite
from esmfold_lite.fold.heads import aligned_error_bin_centres
from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.io.modelcif import PLDDT_GLOBAL_ID
from esmfold_lite.io.structure import parse_structure
from esmfold_lite.io.summary_tsv import write_summary
from esmfold_lite.pipeline import predict_fasta
from esmfold_lite.pipeline.outputs import confidence_text, max_predicted_aligned_error, render_protein, write_files


def strict_json(text: str) -> dict | list:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_and_non_finite_numbers_are_null():
    one = fake_prediction(["MKTAYIAK"]).select(0)
    text = confidence_text(one, "p", "p header")
    data = strict_json(text)
    assert data["plddt"] == pytest.approx(one.plddt[0].tolist(), abs=0.005)
    assert not re.search(r"\.\d{5}", text), "rounded numbers are written short, not as float32 artefacts"
    one.plddt[0, 1] = float("nan")
    one.pae[0, 0, 2] = float("inf")
    one.mean_plddt[0] = float("nan")
    text = confidence_text(one, "p", "")
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


def test_pae_file_has_alphafold_db_layout(tmp_path):
    prediction = fake_prediction(["MKTAYIAKQRQISFV:GSHMLE"])
    pae = prediction.select(0).pae[0].numpy()
    paths = write_files(tmp_path, "p", render_protein(prediction, 0, "p", ("json", "pae")))
    assert paths["pae"] == tmp_path / "p_predicted_aligned_error_v1.json"
    text = paths["pae"].read_text()
    assert text.startswith('[{"predicted_aligned_error":[[') and " " not in text and "\n" not in text  # compact
    (record,) = strict_json(text)
    assert list(record) == ["predicted_aligned_error", "max_predicted_aligned_error"]
    assert record["max_predicted_aligned_error"] == max_predicted_aligned_error() == 31.75
    assert max_predicted_aligned_error() == float(aligned_error_bin_centres()[-1])  # the head's last bin
    matrix = record["predicted_aligned_error"]
    assert all(type(value) is int for row in matrix for value in row)  # integer Å, as AlphaFold DB
    np.testing.assert_array_equal(matrix, np.rint(pae))
    assert np.abs(np.asarray(matrix) - pae).max() <= 0.5
    np.testing.assert_array_equal(read_afdb_pae(paths["pae"]), matrix)
    assert set(strict_json(paths["json"].read_text())) == {
        "id", "header", "notes", "sequence", "plddt", "mean_plddt", "ptm", "max_pae", "pae"}  # fmt: skip

    for bad in ("{}", "[]", '[{"predicted_aligned_error": [[1, 2]]}]', "[1]", "not json"):
        paths["pae"].write_text(bad)
        with pytest.raises(ValueError):
            read_afdb_pae(paths["pae"])


def test_plddt_is_on_the_0_to_100_scale_and_equal_in_every_format(official_checkpoint):
    """One prediction of a (randomized) ESMFold: per-residue pLDDT in the PDB and mmCIF B-factors (CA atoms), the
    mmCIF's _ma_qa_metric_local, the JSON and the NPZ, and mean pLDDT in the mmCIF, JSON and NPZ, all on 0-100."""
    model = esmfold_lite.load_model(official_checkpoint)
    prediction = model.fold(["MKTAYIAKQRQISFVKSHFSRQ:GSHMLE"], num_recycles=0)
    files = render_protein(prediction, 0, "p", ("pdb", "cif", "json", "npz"))
    pdb_atoms, cif_atoms = (parse_structure(files[f], f, extra_fields=("b_factor",)) for f in ("pdb", "cif"))
    block = gemmi.cif.read_string(files["cif"].decode()).sole_block()
    data = strict_json(files["json"])
    arrays = np.load(io.BytesIO(files["npz"]))
    global_rows = block.find("_ma_qa_metric_global.", ["metric_id", "metric_value"])
    (cif_mean,) = [float(row.str(1)) for row in global_rows if row.str(0) == str(PLDDT_GLOBAL_ID)]
    per_residue = {
        "PDB B-factor": pdb_atoms.b_factor[pdb_atoms.atom_name == "CA"],
        "mmCIF B-factor": cif_atoms.b_factor[cif_atoms.atom_name == "CA"],
        "mmCIF _ma_qa_metric_local": [float(v) for v in block.find_loop("_ma_qa_metric_local.metric_value")],
        "JSON plddt": data["plddt"],
        "NPZ plddt": arrays["plddt"],
    }
    means = {"mmCIF global pLDDT": cif_mean, "JSON mean_plddt": data["mean_plddt"], "NPZ": float(arrays["mean_plddt"])}
    for where, values in {**per_residue, **means}.items():
        values = np.asarray(values, dtype=float)
        assert values.min() > 1 and values.max() <= 100, where  # 0-100, not 0-1
    for where, values in per_residue.items():
        np.testing.assert_allclose(values, arrays["plddt"], atol=0.005, err_msg=where)
    for where, value in means.items():
        assert value == pytest.approx(float(prediction.mean_plddt[0]), abs=0.005), where


def test_no_record_id_makes_a_file_that_is_another_records_pae_file():
    from esmfold_lite.io.output_names import FORMAT_SUFFIXES
    from esmfold_lite.pipeline import output_names

    ids = ["foo", "foo_predicted_aligned_error_v1", "FOO_Predicted_Aligned_Error_V1", "foo_predicted_aligned_error_v1_"]
    names = list(output_names(ids))
    files = [name + suffix for name in names for suffix in FORMAT_SUFFIXES.values()]
    assert len({f.lower() for f in files}) == len(files)


def test_predict_writes_modelcif_files_with_full_sequences_and_entities(tmp_path):
    """``predict --formats cif``: each record's mmCIF names the ModelCIF dictionary and describes its polymers: biotite
    gives every chain's full sequence (unknown residues as X, though they have no atoms), identical chains share an
    entity, and every atom_site and _ma_qa_metric_local residue is a position of its chain's entity sequence."""
    from biotite.structure.io import pdbx

    records = {"mono": "MKXTAYBIAK", "homodimer": "MKTAYX:MKTAYX", "heteromer": "MKTAY:GSHXLE:MKTAY"}
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
    predict_fasta(fasta, tmp_path / "out", model=FakeFolder(), formats=("cif",), progress=False)
    for name, sequence in records.items():
        path = tmp_path / "out" / f"{name}.cif"
        file = pdbx.CIFFile.read(path)
        chains = sequence.replace("B", "X").split(":")
        assert {c: str(s) for c, s in pdbx.get_sequence(file).items()} == dict(zip("ABC", chains, strict=False))
        block = gemmi.cif.read(str(path)).sole_block()
        assert block.find_value("_audit_conform.dict_name") == "mmcif_ma.dic"
        assert block.find_value("_entry.id") == name
        entity_of = {row.str(0): row.str(1) for row in block.find("_struct_asym.", ["id", "entity_id"])}
        assert len(set(entity_of.values())) == len(set(chains))
        assert [entity_of["ABC"[chains.index(c)]] for c in chains] == [entity_of[k] for k in "ABC"[: len(chains)]]
        poly_seq = {
            tuple(row.str(k) for k in range(3))
            for row in block.find("_entity_poly_seq.", ["entity_id", "num", "mon_id"])
        }
        site = block.find("_atom_site.", ["label_asym_id", "label_seq_id", "label_comp_id", "label_entity_id"])
        residues = {(row.str(0), row.str(1), row.str(2)) for row in site}
        assert all((row.str(3), row.str(1), row.str(2)) in poly_seq and entity_of[row.str(0)] == row.str(3)
                   for row in site)  # fmt: skip
        local = block.find("_ma_qa_metric_local.", ["label_asym_id", "label_seq_id", "label_comp_id"])
        assert {(row.str(0), row.str(1), row.str(2)) for row in local} == residues
        assert len(local) == len(residues) == sum(aa not in "XB" for aa in sequence.replace(":", ""))
