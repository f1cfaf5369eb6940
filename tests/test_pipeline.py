"""``predict_fasta`` with a fake model: hostile input, batching, resume, out-of-memory recovery, atomic writes."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from biotite.structure.io import pdb
from fake_esmfold import FakeFolder, fake_prediction

from esmfold_lite.io import atomic
from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.pipeline import PipelineError, batching, predict_fasta

ALL_FORMATS = ("pdb", "cif", "json", "pae", "npz", "png")
FILE_FORMATS = ("pdb", "cif", "json", "npz")  # without the slow PNG rendering


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{header}\n{sequence}\n" for header, sequence in records))
    return path


def read_summary(outdir: Path) -> dict[str, dict[str, str]]:
    with (outdir / "summary.tsv").open(newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` → (size, mtime_ns) (directories too), to compare before and after."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            stat = path.lstat()
            listing[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return listing


def outputs(outdir: Path) -> list[str]:
    """The protein files in OUTDIR (not the summary, the run report or the run state)."""
    return sorted(p.name for p in outdir.iterdir() if p.name not in ("summary.tsv", "run.json", ".esmfold-lite"))


def sequence(length: int, seed: int = 0) -> str:
    letters = "ACDEFGHIKLMNPQRSTVWY"
    return "".join(letters[(i * 7 + seed * 3) % 20] for i in range(length))


def test_hostile_fasta_folds_valid_records_reports_invalid_and_stays_inside_outdir(tmp_path, caplog):
    escape_target = tmp_path / "escaped"
    fasta = tmp_path / "hostile.fasta"
    fasta.write_bytes(
        b"MKVL\n"  # sequence before the first header
        b">../../x traversal\nMKTAYIAK\n"
        b">/etc/passwd\nGSHMLE\n" + f">{escape_target}\nACDEFG\n".encode() + b">..\nACDE\n>.\nACDE\n>.hidden\nACDE\n"
        b">nul\x00byte\nMKVA\n"
        b">ctrl\x07\x1b[31mred\rx\nMKVW\n"
        b">empty\n\n"
        b">letters\nMKV1-J\n"
        b">dup\nMKVAAA\n>dup\nMKVAAW\n>DUP\nMKVAAY\n"
        b">" + b"H" * 10_000 + b"\nMKVLLA\n"
        b">CON\nACDEF\n>aux.txt\nACDEF\n>LPT1\nACDEF\n"
        b">summary.tsv\nACDEF\n>run\nACDEF\n"
        b">\nACDEF\n"  # header without id
        b">complex chains A and B\r\nmktay*:\r\n\r\nGSHM*\r\n"
        b">half_empty_chain\nMKV:\n"
        b">too_long\n" + b"A" * 41 + b"\n"
        b">\xff\xfebad_utf8\nMKVA\n"
    )
    outdir = tmp_path / "a" / "b" / "out"
    before_parent = sorted(os.listdir(tmp_path.parent))
    before = tree(tmp_path)
    model = FakeFolder()
    with caplog.at_level(logging.ERROR):
        results = predict_fasta(fasta, outdir, model=model, formats=FILE_FORMATS, max_length=40, progress=False)

    by_status = {"ok": [], "error": []}
    for result in results:
        by_status[result.status].append(result)
    assert len(results) == 25
    assert {r.error.split(" ")[0] for r in by_status["error"]} == {"sequence", "empty", "not", "header", "41"}
    assert len(by_status["error"]) == 6
    assert len(by_status["ok"]) == 19
    names = [r.id for r in results]
    assert len({n.lower() for n in names}) == len(names), "names must be unique, also case-insensitively"
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 100
        assert name.isascii() and name.isprintable()
        assert name.split(".")[0].upper() not in {"CON", "AUX", "LPT1", "NUL"}
    assert "run_2" in names, "a protein never gets the name of the run's own files (run.json)"
    # every error is reported (log → stderr) with its reason
    for result in by_status["error"]:
        assert any(result.id in m and result.error in m for m in caplog.messages)

    # nothing changed outside OUTDIR: the parent of the test's directory and everything beside OUTDIR
    assert sorted(os.listdir(tmp_path.parent)) == before_parent
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith("a")}
    assert after == {k: v for k, v in before.items() if not k.startswith("a")}
    assert not escape_target.exists() and not Path("/etc/passwd.pdb").exists()
    assert not (tmp_path / "x.pdb").exists() and not (tmp_path / "a" / "x.pdb").exists()

    # OUTDIR holds exactly the summary, the run report, the run state and the files of every folded protein
    expected = {"summary.tsv", "run.json", ".esmfold-lite"}
    expected |= {f"{r.id}.{ext}" for r in by_status["ok"] for ext in FILE_FORMATS}
    assert {p.name for p in outdir.iterdir()} == expected
    summary = read_summary(outdir)
    assert list(summary) == names
    for result in results:
        row = summary[result.id]
        assert row["status"] == result.status and int(row["length"]) == result.length
        assert (row["error"] == "") == (result.status == "ok")
        assert "\t" not in row["error"] and "\n" not in row["error"]

    assert summary["complex"]["header"] == "complex chains A and B", "the FASTA header, which the id came from"
    assert summary["too_long"]["header"] == "too_long" and summary["letters"]["header"] == "letters"

    complex_result = next(r for r in results if r.id == "complex")
    assert complex_result.status == "ok" and complex_result.length == 9
    structure = pdb.PDBFile.read(str(outdir / "complex.pdb")).get_structure(model=1)
    assert sorted(set(structure.chain_id)) == ["A", "B"]
    assert model.calls and all(call["chunk_size"] is None for call in model.calls)


def test_symlinks_in_outdir_are_replaced_never_written_through(tmp_path):
    outdir, outside = tmp_path / "out", tmp_path / "elsewhere.pdb"
    outdir.mkdir()
    outside.write_text("keep me")
    (outdir / "p0.pdb").symlink_to(outside)  # pointing outside OUTDIR
    (outdir / "p1.pdb").symlink_to("p2.pdb")  # pointing at another protein's file
    (outdir / "p2.json").symlink_to(tmp_path / "missing.json")  # dangling
    (outdir / "summary.tsv").symlink_to(outside)
    fasta = write_fasta(tmp_path / "in.fasta", [("p0", "MKVL"), ("p1", "MKVW"), ("p2", "MKVY")])
    results = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json"), progress=False)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert outside.read_text() == "keep me" and not (tmp_path / "missing.json").exists()
    for name in ("p0.pdb", "p1.pdb", "p2.pdb", "p2.json", "summary.tsv"):
        assert not (outdir / name).is_symlink()
    for name, sequence in (("p0", "MKVL"), ("p1", "MKVW"), ("p2", "MKVY")):
        atoms = pdb.PDBFile.read(str(outdir / f"{name}.pdb")).get_structure(model=1)
        assert len(atoms[atoms.atom_name == "CA"]) == len(sequence)
    # a link planted over a finished file later makes that protein incomplete: it is folded again and the link replaced
    (outdir / "p1.pdb").unlink()
    (outdir / "p1.pdb").symlink_to("p2.pdb")
    again = FakeFolder()
    predict_fasta(fasta, outdir, model=again, formats=("pdb", "json"), progress=False)
    assert again.folded == ["MKVW"] and not (outdir / "p1.pdb").is_symlink()


def test_batches_are_sorted_by_length_and_packed_by_padded_tokens(tmp_path):
    lengths = [30, 10, 50, 12, 100, 11, 29]
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", sequence(n, i)) for i, n in enumerate(lengths)])
    model = FakeFolder()
    predict_fasta(fasta, tmp_path / "out", model=model, max_tokens_per_batch=60, progress=False)
    batches = [[len(s) for s in call["sequences"]] for call in model.calls]
    assert batches == [[10, 11, 12], [29, 30], [50], [100]]

    # a complex counts its 25-residue linker: 2 × (20 + 25 + 20) > 120, so the two complexes fold apart
    fasta = write_fasta(
        tmp_path / "complex.fasta", [("c1", "A" * 20 + ":" + "G" * 20), ("c2", "W" * 20 + ":" + "K" * 20)]
    )
    model = FakeFolder()
    predict_fasta(fasta, tmp_path / "out2", model=model, max_tokens_per_batch=120, progress=False)
    assert [len(call["sequences"]) for call in model.calls] == [1, 1]


def test_resume_skips_complete_proteins_retries_failed_and_overwrite_recomputes(tmp_path):
    seqs = {f"p{i}": sequence(10 + i, i) for i in range(5)}
    fasta = write_fasta(tmp_path / "in.fasta", list(seqs.items()))
    outdir = tmp_path / "out"
    first = FakeFolder(fail_on=(seqs["p3"],))
    results = predict_fasta(fasta, outdir, model=first, formats=("pdb", "json"), progress=False)
    assert [r.status for r in results] == ["ok", "ok", "ok", "error", "ok"]
    assert "ValueError" in results[3].error and "folded alone" in results[3].notes
    stamps = {p.name: p.stat().st_mtime_ns for p in outdir.glob("*.pdb")}

    second = FakeFolder()
    results = predict_fasta(fasta, outdir, model=second, formats=("pdb", "json"), progress=False)
    assert second.folded == [seqs["p3"]], "only the failed protein is folded again"
    assert [r.status for r in results] == ["ok"] * 5
    assert [r.reused for r in results] == [True, True, True, False, True]
    assert {p.name: p.stat().st_mtime_ns for p in outdir.glob("*.pdb") if p.name != "p3.pdb"} == stamps

    # a missing file, a newly requested format, or a changed sequence make a protein incomplete
    (outdir / "p0.json").unlink()
    third = FakeFolder()
    predict_fasta(fasta, outdir, model=third, formats=("pdb", "json"), progress=False)
    assert third.folded == [seqs["p0"]]
    fourth = FakeFolder()
    predict_fasta(fasta, outdir, model=fourth, formats=("pdb", "npz"), progress=False)
    assert sorted(fourth.folded) == sorted(seqs.values())
    assert outputs(outdir) == sorted(f"{n}{s}" for n in seqs for s in (".npz", ".pdb")), "no file of an earlier fold"
    seqs["p1"] = sequence(33, 9)
    write_fasta(fasta, list(seqs.items()))
    fifth = FakeFolder()
    predict_fasta(fasta, outdir, model=fifth, formats=("pdb",), progress=False)
    assert fifth.folded == [seqs["p1"]]

    overwrite = FakeFolder()
    results = predict_fasta(fasta, outdir, model=overwrite, formats=("pdb",), overwrite=True, progress=False)
    assert sorted(overwrite.folded) == sorted(seqs.values()) and not any(r.reused for r in results)
    assert outputs(outdir) == sorted(f"{name}.pdb" for name in seqs), "the npz files of the earlier fold are gone"

    # a run on another FASTA keeps the rows of this one
    other = write_fasta(tmp_path / "other.fasta", [("q0", "MKVLA")])
    predict_fasta(other, outdir, model=FakeFolder(), formats=("pdb",), progress=False)
    assert list(read_summary(outdir)) == [*seqs, "q0"]


def test_a_crash_mid_run_keeps_finished_batches_and_resume_folds_only_the_rest(tmp_path):
    seqs = [sequence(10 + 5 * i, i) for i in range(6)]
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    outdir = tmp_path / "out"
    crashing = FakeFolder(interrupt_at_call=3)
    with pytest.raises(KeyboardInterrupt):
        predict_fasta(fasta, outdir, model=crashing, max_tokens_per_batch=1, progress=False)
    summary = read_summary(outdir)
    assert [row["status"] for row in summary.values()] == ["ok", "ok", "pending", "pending", "pending", "pending"]
    assert outputs(outdir) == ["p0.json", "p0.pdb", "p1.json", "p1.pdb"]

    resumed = FakeFolder()
    results = predict_fasta(fasta, outdir, model=resumed, max_tokens_per_batch=1, progress=False)
    assert resumed.folded == seqs[2:]
    assert all(r.status == "ok" for r in results)


def _oom_above(max_sequences: int = 10**9, max_chunk: dict[int, int] | None = None):
    """OOM when a batch has more than ``max_sequences`` sequences, or a sequence of length L (key) runs with a chunk
    size above ``max_chunk[L]`` (None = unchunked counts as infinite)."""

    def oom(sequences, chunk_size, on_cpu):
        if len(sequences) > max_sequences:
            return True
        limit = min((v for k, v in (max_chunk or {}).items() if any(len(s) >= k for s in sequences)), default=None)
        return limit is not None and (not isinstance(chunk_size, int) or chunk_size > limit)  # None/"auto": unbounded

    return oom


def test_out_of_memory_splits_the_batch_and_lowers_the_token_budget(tmp_path):
    seqs = [sequence(20 + i, i) for i in range(8)]
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    model = FakeFolder(oom_if=_oom_above(max_sequences=2))
    results = predict_fasta(fasta, tmp_path / "out", model=model, max_tokens_per_batch=1000, progress=False)
    assert all(r.status == "ok" for r in results)
    assert [len(call["sequences"]) for call in model.calls] == [8, 4, 2, 2, 4, 2, 2]
    assert all("out of memory in a batch of 8: split; out of memory in a batch of 4: split" == r.notes for r in results)
    assert read_summary(tmp_path / "out")["p0"]["notes"] == results[0].notes

    # the lowered budget holds for the batches after it: the four 25-mers would fit 100 tokens, but fold one by one
    records = [(f"q{i}", sequence(20, i)) for i in range(4)] + [(f"r{i}", sequence(25, i)) for i in range(4)]
    model = FakeFolder(oom_if=_oom_above(max_sequences=2))
    results = predict_fasta(
        write_fasta(tmp_path / "more.fasta", records), tmp_path / "out2", model=model, max_tokens_per_batch=100
    )
    assert [len(call["sequences"]) for call in model.calls] == [4, 2, 2, 1, 1, 1, 1]
    assert [r.notes for r in results] == ["out of memory in a batch of 4: split"] * 4 + [""] * 4


def test_out_of_memory_lowers_the_chunk_size_and_keeps_it_for_longer_proteins(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("short", "A" * 10), ("long", "A" * 60), ("longer", "A" * 70)])
    model = FakeFolder(oom_if=_oom_above(max_chunk={60: 128}), oom_message="CUDA error: out of memory")
    results = predict_fasta(fasta, tmp_path / "out", model=model, max_tokens_per_batch=10, progress=False)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert [call["chunk_size"] for call in model.calls] == [None, None, 512, 128, 128]
    assert [r.notes for r in results] == ["", "chunk size 128", "chunk size 128"]

    # an explicit chunk size is the starting point
    model = FakeFolder(oom_if=_oom_above(max_chunk={60: 32}))
    predict_fasta(fasta, tmp_path / "out2", model=model, chunk_size=256, max_tokens_per_batch=10, progress=False)
    assert [call["chunk_size"] for call in model.calls] == [256, 256, 128, 32, 32]

    # "auto" is passed to the model, and lowered from the top of the ladder on out-of-memory
    model = FakeFolder(oom_if=_oom_above(max_chunk={60: 128}))
    predict_fasta(fasta, tmp_path / "out3", model=model, chunk_size="auto", max_tokens_per_batch=10, progress=False)
    assert [call["chunk_size"] for call in model.calls] == ["auto", "auto", 512, 128, 128]


def test_a_protein_that_never_fits_is_reported_and_the_run_goes_on(tmp_path, caplog):
    fasta = write_fasta(tmp_path / "in.fasta", [("small", "A" * 10), ("huge", "W" * 90), ("small2", "G" * 12)])
    model = FakeFolder(oom_if=_oom_above(max_chunk={90: 0}))
    with caplog.at_level(logging.ERROR):
        results = predict_fasta(fasta, tmp_path / "out", model=model, max_tokens_per_batch=100, progress=False)
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error == "out of memory with chunk size 8 (CPU fallback not enabled)"
    assert [call["chunk_size"] for call in model.calls] == [None, None, 512, 128, 32, 8]
    assert read_summary(tmp_path / "out")["huge"]["status"] == "error"
    assert any("huge" in m and "out of memory" in m for m in caplog.messages)
    assert not (tmp_path / "out" / "huge.pdb").exists()


def test_cpu_fallback_moves_the_model_to_the_cpu_and_back(tmp_path, monkeypatch):
    # The fake "is on the GPU" while its parameter is float64; the fallback makes it float32 on the CPU.
    monkeypatch.setattr(batching, "_uses_accelerator", lambda model: True)
    fasta = write_fasta(tmp_path / "in.fasta", [("small", "A" * 10), ("huge", "W" * 90), ("huge2", "W" * 95)])

    def oom_on_gpu(sequences, chunk_size, on_cpu):
        return not on_cpu and max(map(len, sequences)) > 50

    model = FakeFolder(oom_if=oom_on_gpu, on_gpu=True)
    results = predict_fasta(
        fasta, tmp_path / "out", model=model, cpu_fallback=True, max_tokens_per_batch=100, progress=False
    )
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert [(call["chunk_size"], call["on_cpu"]) for call in model.calls] == [
        (None, False), (None, False), (512, False), (128, False), (32, False), (8, False), (8, True), (8, True),
    ]  # fmt: skip
    assert results[1].notes == results[2].notes == "chunk size 8; folded on the CPU"
    assert model.weight.dtype == torch.float64 and model.scale.dtype == torch.float16, "the model is moved back"
    assert model.steps.dtype == torch.long


def test_a_failing_writer_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    fasta = write_fasta(tmp_path / "in.fasta", [("p0", "MKVLAA"), ("p1", "GSHMKT")])
    outdir = tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json"), progress=False)
    old_json = (outdir / "p1.json").read_bytes()

    real_fsync = atomic._fsync_file

    def fsync_fails_for_p1_json(path):  # the data is in the temporary file when the write fails
        if path.name.startswith(".p1.json."):
            assert path.stat().st_size > 0
            raise OSError(13, "Permission denied")  # a failure of this file (a full disk stops the run instead)
        real_fsync(path)

    monkeypatch.setattr(atomic, "_fsync_file", fsync_fails_for_p1_json)
    results = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json"), overwrite=True, progress=False)
    assert [r.status for r in results] == ["ok", "error"]
    assert results[1].error == f"writing outputs failed: cannot write {outdir.resolve() / 'p1.json'}: Permission denied"
    assert (outdir / "p1.json").read_bytes() == old_json
    assert outputs(outdir) == ["p0.json", "p0.pdb", "p1.json", "p1.pdb"]
    assert read_summary(outdir)["p1"]["status"] == "error"

    monkeypatch.setattr(atomic, "_fsync_file", real_fsync)
    retry = FakeFolder()
    predict_fasta(fasta, outdir, model=retry, formats=("pdb", "json"), progress=False)
    assert retry.folded == ["GSHMKT"]


def test_outputs_hold_the_predicted_values(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("mono", "MKTAYIAKQR"), ("dimer", "MKTAY:GSHMLE")])
    outdir = tmp_path / "out"
    model = FakeFolder()
    predict_fasta(fasta, outdir, model=model, formats=ALL_FORMATS, progress=False)
    assert model.calls[0]["sequences"] == ["MKTAYIAKQR", "MKTAY:GSHMLE"]  # one batch, shorter first
    prediction = fake_prediction(model.calls[0]["sequences"])
    for i, name in enumerate(["mono", "dimer"]):
        one = prediction.select(i)
        L = int(one.mask.sum())
        data = json.loads((outdir / f"{name}.json").read_text())
        assert set(data) >= {"plddt", "mean_plddt", "ptm", "pae", "max_pae"}
        assert len(data["plddt"]) == L and np.asarray(data["pae"]).shape == (L, L)
        np.testing.assert_allclose(data["plddt"], one.plddt[0].numpy(), atol=0.01)
        np.testing.assert_allclose(data["pae"], one.pae[0].numpy(), atol=0.01)
        assert data["ptm"] == pytest.approx(float(one.ptm[0]), abs=1e-4)
        assert data["max_pae"] == pytest.approx(float(one.pae.max()), abs=0.01)
        arrays = np.load(outdir / f"{name}.npz")
        assert arrays["positions"].shape == (L, 37, 3) and arrays["pae"].shape == (L, L)
        np.testing.assert_allclose(arrays["positions"], one.positions[0].numpy())
        assert str(arrays["sequence"]) == one.sequences[0]
        atoms = pdb.PDBFile.read(str(outdir / f"{name}.pdb")).get_structure(model=1, extra_fields=["b_factor"])
        ca = atoms[atoms.atom_name == "CA"]
        np.testing.assert_allclose(ca.b_factor, data["plddt"], atol=0.01)
        assert (outdir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (outdir / f"{name}.cif").read_text().startswith(f"data_{name}")
        np.testing.assert_array_equal(read_afdb_pae(outdir / f"{name}_predicted_aligned_error_v1.json"),
                                      np.rint(one.pae[0].numpy()))  # fmt: skip


def test_run_level_errors_raise_pipeline_error(tmp_path):
    model = FakeFolder()
    with pytest.raises(PipelineError, match="cannot read FASTA file"):
        predict_fasta(tmp_path / "missing.fasta", tmp_path / "out", model=model)
    (tmp_path / "empty.fasta").write_text("\n \n")
    with pytest.raises(PipelineError, match="no FASTA records"):
        predict_fasta(tmp_path / "empty.fasta", tmp_path / "out", model=model)
    fasta = write_fasta(tmp_path / "in.fasta", [("p", "MKV")])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(PipelineError, match="output directory .* is not a directory"):
        predict_fasta(fasta, tmp_path / "a_file", model=model)
    with pytest.raises(PipelineError, match="output directory .* is not usable"):
        predict_fasta(fasta, tmp_path / "a_file" / "sub", model=model)
    with pytest.raises(ValueError, match="formats"):
        predict_fasta(fasta, tmp_path / "out", model=model, formats=("pdb", "xyz"))
    assert model.calls == []


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    stale = outdir / ".p0.pdb.0123456789ab.tmp.pdb"
    stale.write_text("ATOM  partial")
    fasta = write_fasta(tmp_path / "in.fasta", [("p0", "MKV")])
    predict_fasta(fasta, outdir, model=FakeFolder(), progress=False)
    assert sorted(p.name for p in outdir.iterdir()) == [".esmfold-lite", "p0.json", "p0.pdb", "run.json", "summary.tsv"]
    assert not list((outdir / ".esmfold-lite").glob("*.tmp*"))


def test_summary_round_trip_keeps_zeros_and_escapes_tabs_and_line_breaks(tmp_path):
    from esmfold_lite.io import summary_tsv
    from esmfold_lite.io.summary_tsv import write_summary
    from esmfold_lite.pipeline import ProteinResult

    results = [
        ProteinResult("a", 10, "ok", mean_plddt=0.0, ptm=0.5, seconds=0.0, notes="chunk size 128"),
        ProteinResult("b", 3, "error", error="line one\nline\ttwo"),
    ]
    path = tmp_path / "summary.tsv"
    write_summary(path, [r.to_row() for r in results])
    assert path.read_text().splitlines()[0].split("\t")[:7] == [
        "id", "length", "mean_plddt", "ptm", "status", "seconds", "error",
    ]  # fmt: skip
    assert read_summary(tmp_path)["b"]["error"] == "line one\\nline\\ttwo", "one line, escaped (io.tsv)"
    back = [ProteinResult.from_row(row) for row in summary_tsv.read_summary(path)]
    assert back == results and back[1].mean_plddt is None


def stamps(outdir: Path) -> dict[str, int]:
    """mtime_ns of every protein file, to show that nothing was rewritten."""
    return {name: (outdir / name).stat().st_mtime_ns for name in outputs(outdir)}


def test_resume_refolds_truncated_edited_replaced_or_missing_files_and_nothing_else(tmp_path):
    seqs = {f"p{i}": sequence(12 + i, i) for i in range(6)}
    fasta, outdir = write_fasta(tmp_path / "in.fasta", list(seqs.items())), tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "json"), progress=False)
    before = stamps(outdir)

    unchanged = FakeFolder()
    results = predict_fasta(fasta, outdir, model=unchanged, formats=("pdb", "json"), progress=False)
    assert unchanged.calls == [] and all(r.reused for r in results)
    assert stamps(outdir) == before, "an unchanged rerun rewrites nothing"

    pdb_text = (outdir / "p0.pdb").read_bytes()
    (outdir / "p0.pdb").write_bytes(pdb_text[:100])  # truncated: a 100-byte PDB is not a result
    json_text = (outdir / "p1.json").read_bytes()
    (outdir / "p1.json").write_bytes(json_text.replace(b'"ptm":0.5', b'"ptm":0.9'))  # same size, other content
    (outdir / "p2.pdb").unlink()
    (outdir / "p2.pdb").symlink_to("p5.pdb")  # another protein's file under its name
    (outdir / "p3.json").unlink()  # missing
    os.utime(outdir / "p4.pdb", ns=(1, 1))  # touched but intact: hashed, found whole, kept
    repaired = FakeFolder()
    predict_fasta(fasta, outdir, model=repaired, formats=("pdb", "json"), progress=False)
    assert sorted(repaired.folded) == sorted(seqs[f"p{i}"] for i in range(4))
    assert (outdir / "p0.pdb").read_bytes() == pdb_text and (outdir / "p1.json").read_bytes() == json_text
    assert not (outdir / "p2.pdb").is_symlink()
    after = stamps(outdir)
    assert after["p5.pdb"] == before["p5.pdb"] and after["p5.json"] == before["p5.json"]
    assert after["p4.json"] == before["p4.json"] and after["p4.pdb"] == 1
    assert all(row["status"] == "ok" for row in read_summary(outdir).values())


def test_the_pae_file_is_part_of_a_complete_result_as_every_format(tmp_path):
    seqs = {f"p{i}": sequence(12 + i, i) for i in range(3)}
    fasta, outdir = write_fasta(tmp_path / "in.fasta", list(seqs.items())), tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("json", "pae"), progress=False)
    endings = (".json", "_predicted_aligned_error_v1.json")
    assert outputs(outdir) == sorted(f"p{i}{end}" for i in range(3) for end in endings)
    before = stamps(outdir)

    edited, missing = outdir / "p0_predicted_aligned_error_v1.json", outdir / "p1_predicted_aligned_error_v1.json"
    text = edited.read_bytes()
    edited.write_bytes(text.replace(b"31.75", b"31.57"))  # same size, other content
    missing.unlink()
    repaired = FakeFolder()
    predict_fasta(fasta, outdir, model=repaired, formats=("json", "pae"), progress=False)
    assert sorted(repaired.folded) == sorted([seqs["p0"], seqs["p1"]])
    assert edited.read_bytes() == text and missing.is_file()
    after = stamps(outdir)
    assert {name: after[name] for name in after if name.startswith("p2")} == {
        name: before[name] for name in before if name.startswith("p2")}  # fmt: skip
    unchanged = FakeFolder()
    predict_fasta(fasta, outdir, model=unchanged, formats=("json", "pae"), progress=False)
    assert unchanged.calls == [] and stamps(outdir) == after


def test_changed_settings_stop_the_run_unless_overwrite(tmp_path):
    seqs = {f"p{i}": sequence(10 + i, i) for i in range(3)}
    fasta, outdir = write_fasta(tmp_path / "in.fasta", list(seqs.items())), tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), num_recycles=3, progress=False)
    before = {**stamps(outdir), "summary.tsv": (outdir / "summary.tsv").stat().st_mtime_ns}

    other_model = FakeFolder(on_gpu=True)  # other weights (their dtype)
    for kwargs in ({"num_recycles": 1}, {"num_recycles": 3, "dtype": torch.bfloat16}, {"model": other_model}):
        options = {"model": FakeFolder(), "num_recycles": 3, **kwargs}
        with pytest.raises(PipelineError, match="other settings .*--overwrite.* or write to another output dir"):
            predict_fasta(fasta, outdir, progress=False, **options)
        assert options["model"].calls == []
    assert {**stamps(outdir), "summary.tsv": (outdir / "summary.tsv").stat().st_mtime_ns} == before
    with pytest.raises(PipelineError, match=r"num-recycles: 3 -> 1"):
        predict_fasta(fasta, outdir, model=FakeFolder(), num_recycles=1, progress=False)

    # overwrite recomputes this FASTA with the new settings; rows of another FASTA made with the old ones turn stale
    other_fasta = write_fasta(tmp_path / "other.fasta", [("q0", "MKVLA")])
    predict_fasta(other_fasta, outdir, model=FakeFolder(), num_recycles=3, progress=False)
    model = FakeFolder()
    results = predict_fasta(fasta, outdir, model=model, num_recycles=1, overwrite=True, progress=False)
    assert sorted(model.folded) == sorted(seqs.values()) and all(r.status == "ok" for r in results)
    assert all(call["num_recycles"] == 1 for call in model.calls)
    summary = read_summary(outdir)
    assert summary["q0"]["status"] == "stale" and "other settings" in summary["q0"]["error"]
    # the new settings are now OUTDIR's: the same command skips everything
    again = FakeFolder()
    predict_fasta(fasta, outdir, model=again, num_recycles=1, progress=False)
    assert again.calls == []
    report = json.loads((outdir / "run.json").read_text())
    assert report["settings"]["num_recycles"] == 1 and report["proteins"]["skipped_complete"] == 3


def test_run_settings_identify_checkpoints_cheaply(tmp_path, monkeypatch):
    import shutil

    from esmfold_lite.pipeline import ESMFoldEngine, FoldingOptions, settings

    def run_settings(**options):
        return settings.run_settings(ESMFoldEngine(FoldingOptions(**options)))

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"model": {"w": torch.arange(4.0)}}, weights / "a.pt")
    torch.save({"model": {"w": torch.arange(4.0) + 1}}, weights / "b.pt")
    a, b = run_settings(model_source=weights / "a.pt"), run_settings(model_source=weights / "b.pt")
    assert a.digest != b.digest
    copy = tmp_path / "copy" / "a.pt"
    copy.parent.mkdir()
    shutil.copy(weights / "a.pt", copy)
    os.utime(copy, ns=(5, 5))
    assert run_settings(model_source=copy).digest == a.digest, "a moved or copied checkpoint is the same"
    (weights / "legacy.bin").write_bytes(b"x" * 3_000_000)
    legacy = run_settings(model_source=weights / "legacy.bin")
    (weights / "legacy.bin").write_bytes(b"x" * 2_999_999 + b"y")
    assert run_settings(model_source=weights / "legacy.bin").digest != legacy.digest
    # the LM: given, or the official file beside the checkpoint
    assert run_settings(model_source=weights / "a.pt", lm=weights / "b.pt").digest != a.digest
    shutil.copy(weights / "b.pt", weights / "esm2_t36_3B_UR50D.pt")
    assert run_settings(model_source=weights / "a.pt").values["lm"]["files"][0]["file"] == "esm2_t36_3B_UR50D.pt"
    # a folder (transformers) and a registry name
    assert run_settings(model_source=weights).values["model"]["files"][0]["file"] == "a.pt"
    assert run_settings(model_source="esmfold_v1").values["model"] == {"name": "esmfold_v1"}
    official = run_settings(model_source="esmfold_v1")
    assert run_settings(model_source="esmfold_v1", num_recycles=0).digest != official.digest
    monkeypatch.setattr(settings, "__version__", "9.9.9")
    assert run_settings(model_source=weights / "b.pt").digest != b.digest


def test_a_busy_outdir_stops_a_second_run_at_once_and_its_files_are_left_alone(tmp_path):
    from esmfold_lite.pipeline.run_state import open_run_state

    fasta, outdir = write_fasta(tmp_path / "in.fasta", [("p0", "MKVL")]), tmp_path / "out"
    outdir.mkdir()
    with open_run_state(outdir):  # another run holds OUTDIR
        in_flight = outdir / ".p9.pdb.0123456789ab.tmp.pdb"
        in_flight.write_text("ATOM  being written by the other run")
        model = FakeFolder()
        with pytest.raises(PipelineError, match=rf"in use by another esmfold-lite run \(pid {os.getpid()} on "):
            predict_fasta(fasta, outdir, model=model, progress=False)
        assert model.calls == [] and in_flight.exists()
        assert outputs(outdir) == [in_flight.name]
    # once the other run is over, its leftovers are cleaned up and the run goes through
    assert predict_fasta(fasta, outdir, model=FakeFolder(), progress=False)[0].status == "ok"
    assert not in_flight.exists()


def test_a_run_that_fails_before_writing_anything_leaves_no_outdir_behind(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("p0", "MKVL")])
    with pytest.raises(PipelineError, match="cannot load the model"):
        predict_fasta(fasta, tmp_path / "new" / "deeper" / "out", model_source=tmp_path / "missing.pt", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["in.fasta"]

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="cannot load the model"):
        predict_fasta(fasta, existing, model_source=tmp_path / "missing.pt", progress=False)
    assert (existing / "keep.txt").read_text() == "mine" and not (existing / "summary.tsv").exists()


def test_summary_names_each_proteins_fasta_header_also_after_a_state_of_an_earlier_version(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("sp|P69905|HBA_HUMAN Hemoglobin subunit alpha", "MVLSPADKTNVKAAW")])
    outdir = tmp_path / "out"
    (result,) = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb",), progress=False)
    assert read_summary(outdir)[result.id]["header"] == "sp|P69905|HBA_HUMAN Hemoglobin subunit alpha"

    # a run state written before the header column existed is brought up to date, and its results still count
    with contextlib.closing(sqlite3.connect(outdir / ".esmfold-lite" / "state.sqlite")) as db, db:
        db.execute("ALTER TABLE proteins DROP COLUMN header")
    model = FakeFolder()
    (again,) = predict_fasta(fasta, outdir, model=model, formats=("pdb",), progress=False)
    assert again.reused and model.folded == []
    assert read_summary(outdir)[result.id]["header"] == "sp|P69905|HBA_HUMAN Hemoglobin subunit alpha"
    third = FakeFolder()
    predict_fasta(fasta, outdir, model=third, formats=("pdb",), progress=False)
    assert third.folded == [], "still complete: its completion record is untouched"


def test_a_complete_protein_stays_complete_when_a_resumed_run_lowers_max_length(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("long", sequence(30)), ("short", sequence(10, 1))])
    outdir = tmp_path / "out"
    predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb",), progress=False)
    model = FakeFolder()
    results = predict_fasta(fasta, outdir, model=model, formats=("pdb",), max_length=20, progress=False)
    assert [(r.status, r.reused) for r in results] == [("ok", True), ("ok", True)] and model.folded == []
    assert read_summary(outdir)["long"]["status"] == "ok"


def test_changed_checkpoints_are_named_by_their_files_in_the_conflict_message():
    from esmfold_lite.pipeline.run_state import settings_differences

    def checkpoint(name: str, size: int, digest: str) -> dict:
        return {"files": [{"file": name, "size": size, "zip_crc": digest}]}

    old = {"model": checkpoint("esmfold_3B_v1.pt", 8_400_000_000, "a" * 64), "lm": None, "num_recycles": None}
    new = {"model": checkpoint("esmfold_3B_v1.pt", 8_400_000_000, "b" * 64), "lm": {"name": "esm2"}, "num_recycles": 3}
    assert settings_differences(old, new) == [
        "lm: not set -> esm2",
        "model: esmfold_3B_v1.pt (8,400,000,000 bytes), other contents",
        "num-recycles: not set -> 3",
    ]
    other = {**old, "model": checkpoint("hf/model.safetensors", 10, "c")}
    assert settings_differences(old, other) == [
        "model: esmfold_3B_v1.pt (8,400,000,000 bytes) -> hf/model.safetensors (10 bytes)"
    ]


def test_residues_folded_as_unknown_are_named_in_the_notes_and_the_json(tmp_path):
    records = [("one", "MKUAKX"), ("many", "XBZUOXXM"), ("complex", "MKU:GXH"), ("plain", "MKTAY")]
    fasta, outdir = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out"
    results = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "cif", "json"), progress=False)
    notes = {
        "one": "2 residues folded as unknown (UNK, no atoms): U at 3, X at 6",
        "many": "7 residues folded as unknown (UNK, no atoms): X at 1, B at 2, Z at 3, U at 4, O at 5 and 2 more",
        "complex": "2 residues folded as unknown (UNK, no atoms): U at 1:3, X at 2:2",
        "plain": "",
    }
    assert {r.id: r.notes for r in results} == notes
    assert {name: row["notes"] for name, row in read_summary(outdir).items()} == notes
    for name, note in notes.items():
        assert json.loads((outdir / f"{name}.json").read_text())["notes"] == ([note] if note else [])
    atoms = pdb.PDBFile.read(str(outdir / "one.pdb")).get_structure(model=1)
    assert sorted(set(atoms.res_id[atoms.atom_name == "CA"].tolist())) == [1, 2, 4, 5], "no atoms for U and X"
    assert "UNK" in (outdir / "one.cif").read_text()
    again = predict_fasta(fasta, outdir, model=FakeFolder(), formats=("pdb", "cif", "json"), progress=False)
    assert {r.id: (r.reused, r.notes) for r in again} == {name: (True, note) for name, note in notes.items()}


def test_a_batch_far_beyond_the_others_is_announced_with_its_memory_and_expected_time(
    tmp_path, official_checkpoint, caplog
):
    """Shortest first: the second 8-residue protein is like the first (no line); the 40-residue one does ~26x the
    work (``fold_work``) of the largest so far, so its planned trunk memory and expected time are logged first."""
    import esmfold_lite

    fasta = write_fasta(tmp_path / "in.fasta", [("c", sequence(40, 1)), ("a", sequence(8, 2)), ("b", sequence(8, 3))])
    model = esmfold_lite.load_model(official_checkpoint)
    with caplog.at_level(logging.INFO, logger="esmfold_lite"):
        results = predict_fasta(fasta, tmp_path / "out", model=model, num_recycles=0, max_tokens_per_batch=1,
                                formats=("pdb",), progress=False)  # fmt: skip
    assert [r.status for r in results] == ["ok"] * 3
    lines = [m for m in caplog.messages if "the work of the largest batch so far" in m]
    assert len(lines) == 1 and lines[0].startswith("c (40 positions): planned peak "), caplog.messages
    assert " MiB of trunk memory (" in lines[0] and "x the largest so far), about 26x the work" in lines[0]
    assert "so far (b, " in lines[0] or "so far (a, " in lines[0]
    assert lines[0].endswith(" on this machine") and "; expect about " in lines[0]
    folded = [m for m in caplog.messages if " residues, mean pLDDT " in m]
    assert folded[-1].startswith("c: ") and caplog.messages.index(lines[0]) < caplog.messages.index(folded[-1])
