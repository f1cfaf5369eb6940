"""The pipeline drives any ``FoldingEngine``: a second engine (``FakeEngine``, not ESMFold) gives ``predict_fasta``
the same files as the ESMFold engine folding with the same model, and its settings decide what resumes."""

from __future__ import annotations

import json

import pytest
from fake_esmfold import FakeEngine, FakeFolder

from esmfold_lite.pipeline import ESMFoldEngine, FoldingEngine, FoldingOptions, PipelineError, predict_fasta
from esmfold_lite.version import __version__

RECORDS = {"a": "MKTAYIAKQR", "b": "MKV:LLAW", "c": "ACDEFGHIKLMNPQ", "bad": "MKJ1"}


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "in.fasta"
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in RECORDS.items()))
    return path


def protein_files(outdir) -> dict[str, bytes]:
    """The proteins' files (not ``run.json``, which names the settings)."""
    files = {p.name: p.read_bytes() for p in outdir.glob("*.*") if p.suffix in (".pdb", ".cif", ".json")}
    files.pop("run.json")
    return files


def test_both_engines_fit_the_interface():
    assert all(callable(getattr(FakeEngine(), name)) for name in ("settings", "load", "fold"))
    engine: FoldingEngine = ESMFoldEngine(FoldingOptions(model_source="esmfold_v1"))
    assert engine.model is None and engine.settings()["model"] == {"name": "esmfold_v1"}


def test_a_second_engine_drives_predict_fasta_unchanged(fasta, tmp_path):
    formats = ("pdb", "cif", "json")
    engine = FakeEngine()
    results = predict_fasta(fasta, tmp_path / "fake", engine=engine, device="cpu", formats=formats, progress=False)
    esmfold = predict_fasta(fasta, tmp_path / "esmfold", model=FakeFolder(), formats=formats, progress=False)
    assert protein_files(tmp_path / "fake") == protein_files(tmp_path / "esmfold") != {}
    drop = ("seconds",)
    assert [{k: v for k, v in r.to_row().items() if k not in drop} for r in results] == [
        {k: v for k, v in r.to_row().items() if k not in drop} for r in esmfold
    ]
    assert [r.status for r in results] == ["ok", "ok", "ok", "error"]
    assert engine.devices == ["cpu"], "loaded once, where asked"
    report = json.loads((tmp_path / "fake" / "run.json").read_text())
    assert report["settings"] == {"esmfold_lite": __version__, "engine": "fake", "version": 1}

    # its settings decide what resumes: the same skip everything without loading, others stop the run
    again = FakeEngine()
    resumed = predict_fasta(fasta, tmp_path / "fake", engine=again, progress=False)
    assert [r.reused for r in resumed] == [True, True, True, False]
    assert again.devices == []
    with pytest.raises(PipelineError, match=r"other settings \(version: 1 -> 2\)"):
        predict_fasta(fasta, tmp_path / "fake", engine=FakeEngine(version=2), progress=False)


def test_the_out_of_memory_recovery_drives_the_engine(fasta, tmp_path):
    engine = FakeEngine(oom_if=lambda sequences, chunk_size, on_cpu: "ACDEFGHIKLMNPQ" in sequences and chunk_size != 32)
    results = predict_fasta(fasta, tmp_path / "out", engine=engine, chunk_size=None, progress=False)
    assert [r.status for r in results] == ["ok", "ok", "ok", "error"]
    assert "chunk size 32" in results[2].notes
    assert [call["chunk_size"] for call in engine.model.calls if call["ok"]][-1] == 32
