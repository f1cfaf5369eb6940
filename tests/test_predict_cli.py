"""``esmfold-lite predict``: flags, outputs, exit codes, and being killed mid-run (a fake model stands in for ESMFold).

``check_outputs`` verifies a finished OUTDIR the way a user would (every file parses, B-factors = pLDDT, summary rows
complete); the end-to-end test on a checkpoint in the official format will reuse it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from biotite.structure.io import pdb, pdbx
from fake_esmfold import FakeFolder, patch_load_model

import esmfold_lite
import esmfold_lite.fold.precision
import esmfold_lite.fold_progress
import esmfold_lite.pipeline.predict
import esmfold_lite.pipeline.progress
from esmfold_lite import cli
from esmfold_lite.cli import build_parser, main
from esmfold_lite.commands import predict as predict_command
from esmfold_lite.io.confidence import read_afdb_pae

FAKE_CLI = Path(__file__).with_name("fake_esmfold.py")
ALL_FORMATS = ("pdb", "cif", "json", "pae", "npz", "png")
RECORDS = {"ubq": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
           "gb1": "MTYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE",
           "pair": "MKTAYIAKQRQISFVKSHFSRQ:GSHMLEDPVDAFQ"}  # fmt: skip


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    return path


def read_summary(outdir: Path) -> dict[str, dict[str, str]]:
    with (outdir / "summary.tsv").open(newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}


def temp_files(outdir: Path) -> list[str]:
    """Temporary files of interrupted atomic writes, in OUTDIR and its run state."""
    return [p.name for p in outdir.rglob(".*.tmp*")]


def check_outputs(outdir: Path, records: dict[str, str], formats=ALL_FORMATS) -> None:
    """Every requested file of every record exists and parses; PDB/mmCIF B-factors are the JSON's pLDDT; one PDB chain
    per ':'-separated chain; summary rows complete."""
    summary = read_summary(outdir)
    for name, sequence in records.items():
        row = summary[name]
        assert row["status"] == "ok" and row["error"] == ""
        assert int(row["length"]) == len(sequence.replace(":", ""))
        assert 0 <= float(row["mean_plddt"]) <= 100 and 0 <= float(row["ptm"]) <= 1 and float(row["seconds"]) >= 0
        structures = []
        if "pdb" in formats:
            structures.append(
                pdb.PDBFile.read(str(outdir / f"{name}.pdb")).get_structure(model=1, extra_fields=["b_factor"])
            )
        if "cif" in formats:
            cif = pdbx.CIFFile.read(str(outdir / f"{name}.cif"))
            structures.append(pdbx.get_structure(cif, model=1, extra_fields=["b_factor"]))
        plddt = None
        if "json" in formats:
            data = json.loads((outdir / f"{name}.json").read_text())
            plddt = np.asarray(data["plddt"])
            assert data["mean_plddt"] == pytest.approx(float(row["mean_plddt"]), abs=1e-3)
            assert data["ptm"] == pytest.approx(float(row["ptm"]), abs=1e-3)
            assert np.asarray(data["pae"]).shape == (len(plddt), len(plddt)) and data["max_pae"] >= 0
        if "pae" in formats:
            pae = read_afdb_pae(outdir / f"{name}_predicted_aligned_error_v1.json")
            assert pae.shape == (int(row["length"]),) * 2 and 0 <= pae.min() and pae.max() <= 31.75
            if "json" in formats:
                assert np.abs(pae - np.asarray(data["pae"])).max() <= 0.5 + 0.005
        if "npz" in formats:
            arrays = np.load(outdir / f"{name}.npz")
            assert arrays["positions"].shape == (int(row["length"]), 37, 3)
            plddt = arrays["plddt"] if plddt is None else plddt
        if "png" in formats:
            assert (outdir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for atoms in structures:
            ca = atoms[atoms.atom_name == "CA"]
            assert len(ca) == int(row["length"])
            assert len(set(atoms.chain_id)) == sequence.count(":") + 1
            if plddt is not None:
                np.testing.assert_allclose(ca.b_factor, plddt, atol=0.01)


@pytest.fixture
def fake_models(monkeypatch) -> list[tuple[dict, FakeFolder]]:
    """the pipeline's ``load_model`` returns a new ``FakeFolder``; the list holds (loader arguments, model) per load."""
    loaded = []

    def load_model(source, lm=None, device=None, dtype=None, **kwargs):
        loaded.append(({"source": source, "lm": lm, "device": device, "dtype": dtype, **kwargs}, FakeFolder()))
        return loaded[-1][1]

    patch_load_model(monkeypatch, load_model)
    return loaded


def predict_parser():
    return next(a for a in build_parser()._actions if a.dest == "command").choices["predict"]


def test_help_explains_every_flag(capsys):
    options = [a for a in predict_parser()._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[-1] for a in options} >= {
        "--output-dir", "--model", "--lm", "--formats", "--num-recycles", "--chunk-size", "--max-tokens-per-batch",
        "--max-length", "--device", "--dtype", "--lm-dtype", "--cpu-offload", "--cpu-fallback", "--overwrite",
        "--verbose", "--quiet",
    }  # fmt: skip
    assert all(len(a.help) > 15 for a in options)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    assert "summary.tsv" in capsys.readouterr().out


def test_predict_writes_every_format_and_passes_the_options(tmp_path, fake_models):
    fasta = write_fasta(tmp_path / "in.fasta", RECORDS)
    outdir = tmp_path / "out"
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", "esmfold_v1", "--lm", "lm.pt", "--device", "cpu",
            "--dtype", "bfloat16", "--lm-dtype", "float16", "--cpu-offload", "--num-recycles", "2",
            "--chunk-size", "64", "--formats", "PDB, mmcif,json,pae,npz,png", "-q"]  # fmt: skip
    assert main(argv) == 0
    check_outputs(outdir, RECORDS)
    (options, model), *more = fake_models
    assert not more
    assert options == {"source": "esmfold_v1", "lm": "lm.pt", "device": "cpu", "dtype": "bfloat16",
                       "lm_device": "cpu", "lm_dtype": "float16"}  # fmt: skip
    assert [(c["num_recycles"], c["chunk_size"]) for c in model.calls] == [(2, 64)]

    # the same command again loads no model and folds nothing
    assert main(argv) == 0 and len(fake_models) == 1


def test_bad_records_fail_alone_with_exit_status_3(tmp_path, fake_models, caplog):
    fasta = write_fasta(tmp_path / "in.fasta", {"good": "MKTAYIAK", "bad": "MKT4Y", "long": "A" * 30})
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", "m", "--max-length", "20"]) == 3
    summary = read_summary(tmp_path / "out")
    assert [row["status"] for row in summary.values()] == ["ok", "error", "error"]
    assert "'4' at 4" in summary["bad"]["error"] and "maximum length 20" in summary["long"]["error"]
    assert any("bad" in m and "'4' at 4" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no FASTA records"),
        ("missing_fasta", "cannot read FASTA file"),
        ("outdir_is_file", "is not a directory"),
        ("missing_weights", "cannot load the model from"),
        ("corrupt_weights", "cannot load the model from"),
    ],
)
def test_run_level_errors_are_one_line_and_exit_1(tmp_path, capsys, setup, message):
    fasta = write_fasta(tmp_path / "in.fasta", {"p": "MKV"})
    outdir, weights = tmp_path / "out", tmp_path / "missing.pt"
    if setup == "empty":
        fasta.write_text("")
    elif setup == "missing_fasta":
        fasta = tmp_path / "nothing.fasta"
    elif setup == "outdir_is_file":
        outdir.write_text("")
    elif setup == "corrupt_weights":
        weights = tmp_path / "corrupt.pt"
        weights.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert main(["predict", str(fasta), "-o", str(outdir), "--model", str(weights), "--no-progress"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("esmfold-lite predict: error: ") and message in lines[-1]
    assert not any(line.startswith("Traceback") for line in lines)
    if setup != "outdir_is_file":
        assert not outdir.exists(), "a run that fails before writing anything leaves no OUTDIR behind"


@pytest.mark.parametrize("argv", [["--chunk-size", "0"], ["--formats", "pdb,xyz"], ["--max-tokens-per-batch", "-1"]])
def test_invalid_flag_values_are_usage_errors(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "in.fasta", "-o", str(tmp_path), "--model", "m", *argv])
    assert exit_info.value.code == 2


def _start_fake_cli(
    fasta: Path, outdir: Path, log: Path, delay: float, *more: str, gate: Path | None = None
) -> subprocess.Popen:
    """``esmfold-lite predict`` with the fake model in a subprocess; stderr is a pipe, not a terminal. With ``gate``,
    the run waits after its first batch until that file exists."""
    env = {**os.environ, "FAKE_ESMFOLD_DELAY": str(delay), "FAKE_ESMFOLD_LOG": str(log)}
    if gate is not None:
        env["FAKE_ESMFOLD_GATE"] = str(gate)
    argv = [sys.executable, str(FAKE_CLI), "predict", str(fasta), "-o", str(outdir), "--model", "fake",
            "--formats", "pdb,cif,json", "--max-tokens-per-batch", "1", *more]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_ok_rows(process: subprocess.Popen, outdir: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (outdir / "summary.tsv").exists():
            if sum(row["status"] == "ok" for row in read_summary(outdir).values()) >= count:
                return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no {count} finished proteins within {timeout} s")


def test_killed_mid_run_leaves_no_partial_file_and_the_rerun_folds_only_the_rest(tmp_path, fake_models):
    records = {f"p{i}": "MKTAYIAKQR"[: 3 + i % 7] * (i + 1) for i in range(8)}
    fasta, outdir, log = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out", tmp_path / "folded.log"
    process = _start_fake_cli(fasta, outdir, log, delay=0.3)
    _wait_for_ok_rows(process, outdir, 3)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    summary = read_summary(outdir)
    done = {name for name, row in summary.items() if row["status"] == "ok"}
    assert 3 <= len(done) < len(records)
    check_outputs(outdir, {name: records[name] for name in done}, formats=("pdb", "cif", "json"))
    for path in outdir.iterdir():  # every file under its final name is whole, finished protein or not
        if path.suffix == ".pdb" and not path.name.startswith("."):
            pdb.PDBFile.read(str(path)).get_structure(model=1)
        elif path.suffix == ".json" and not path.name.startswith("."):
            json.loads(path.read_text())
    stamps = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.stem in done}

    argv = ["predict", str(fasta), "-o", str(outdir), "--model", "fake", "--formats", "pdb,cif,json"]
    assert main([*argv, "--max-tokens-per-batch", "1"]) == 0  # the killed run's lock does not block it
    (_, model), *_ = fake_models
    assert sorted(model.folded) == sorted(seq for name, seq in records.items() if name not in done)
    assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.stem in done} == stamps
    assert temp_files(outdir) == []
    check_outputs(outdir, records, formats=("pdb", "cif", "json"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_wrapped_by_a_c_extension_is_still_a_clean_interruption(signum, caplog):
    """Ray's ``ray.wait`` (Cython) hands an exception raised by the signal handler back as a SystemError whose
    context it is; fold-proteome must still stop with 128 + signal and the resume hint, not a traceback."""

    def command() -> int:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
        except BaseException:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set")  # noqa: B904
        return 0

    assert cli.run_interruptibly(command, lambda: predict_command.INTERRUPTED) == 128 + signum
    assert any("interrupted" in m and "resume" in m for m in caplog.messages)
    with pytest.raises(SystemError):  # a SystemError of its own is not an interruption
        cli.run_interruptibly(lambda: (_ for _ in ()).throw(SystemError("other")))

    def fails_while_unwinding() -> int:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
        finally:
            raise OSError(28, "No space left on device")  # e.g. flushing a shard on the way out

    with pytest.raises(OSError, match="No space left"):  # not hidden behind a clean 130/143
        cli.run_interruptibly(fails_while_unwinding)

    from esmfold_lite.pipeline import interruption_of  # what the run report calls "interrupted"

    wrapped, after = SystemError("returned a result with an exception set"), OSError("disk full")
    wrapped.__context__ = after.__context__ = KeyboardInterrupt()
    assert isinstance(interruption_of(wrapped), KeyboardInterrupt) and interruption_of(after) is None


def test_sigterm_stops_cleanly_with_status_143(tmp_path):
    records = {f"p{i}": "GSHMKTAYIA" * (i + 1) for i in range(6)}
    fasta, outdir, log = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out", tmp_path / "folded.log"
    process = _start_fake_cli(fasta, outdir, log, delay=0.3)
    _wait_for_ok_rows(process, outdir, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert temp_files(outdir) == []
    statuses = [row["status"] for row in read_summary(outdir).values()]
    assert statuses[0] == "ok" and statuses[-1] == "pending"


def test_end_to_end_on_a_checkpoint_in_the_official_format(tmp_path, official_checkpoint):
    fasta = write_fasta(tmp_path / "in.fasta", {**RECORDS, "bad": "MKT4"})
    outdir = tmp_path / "out"
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", str(official_checkpoint), "--device", "cpu",
            "--num-recycles", "0", "--formats", ",".join(ALL_FORMATS), "--no-progress",
            "--dtype", "float32"]  # fmt: skip
    assert main(argv) == 3  # the bad record
    check_outputs(outdir, RECORDS)
    assert read_summary(outdir)["bad"]["status"] == "error"

    # batched and padded in the pipeline, each protein gets what folding it alone gives
    model = esmfold_lite.load_model(official_checkpoint)
    for name, sequence in RECORDS.items():
        alone = model.fold([sequence], num_recycles=0).select(0)
        arrays = np.load(outdir / f"{name}.npz")
        np.testing.assert_allclose(arrays["positions"], alone.positions[0].numpy(), atol=1e-3)
        np.testing.assert_allclose(arrays["plddt"], alone.plddt[0].numpy(), atol=1e-3)
        assert float(arrays["ptm"]) == pytest.approx(float(alone.ptm[0]), abs=1e-4)


@pytest.mark.parametrize("avx512", [True, False])
def test_default_dtype_is_auto_and_its_choice_is_logged(
    tmp_path, official_checkpoint, caplog, monkeypatch, avx512
):
    monkeypatch.setattr(esmfold_lite.fold.precision, "cpu_has_avx512", lambda: avx512)
    fasta, outdir = write_fasta(tmp_path / "in.fasta", {"a": "MKTAYIAKQR"}), tmp_path / "out"
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", str(official_checkpoint), "--num-recycles", "0",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    lm = "float16" if avx512 else "float32"
    assert any(f"dtypes: language model {lm}, trunk float32 (auto" in m for m in caplog.messages)
    settings = json.loads((outdir / "run.json").read_text())["settings"]
    assert settings["dtype"] == "auto" and settings["lm_dtype"] is None


def test_steps_inside_a_fold_show_in_the_bar_and_without_one_are_logged_with_the_time_left(
    tmp_path, official_checkpoint, caplog, capsys, monkeypatch
):
    fasta = write_fasta(tmp_path / "in.fasta", {"a": "MKTAYIAKQR"})
    argv = ["predict", str(fasta), "-o", str(tmp_path / "fast"), "--model", str(official_checkpoint),
            "--num-recycles", "1", "--device", "cpu", "--dtype", "float32", "--no-progress"]  # fmt: skip
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert not any("trunk pass" in m or "layer" in m for m in caplog.messages), "a fast fold logs no steps"

    monkeypatch.setenv("ESMFOLD_LITE_PROGRESS_INTERVAL", "0")  # a line at every step (30 s by default)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main([*argv[:3], str(tmp_path / "slow"), *argv[4:]]) == 0
    steps = [m for m in caplog.messages if m.startswith("a: ")]
    layers = [m for m in steps if "language model layer" in m]
    assert len(layers) == 2 and layers[0].startswith("a: language model layer 1/2, about ")
    assert all(m.endswith(" left in the language model") for m in layers)
    blocks = [m.split(", about ")[0] for m in steps if "trunk pass" in m]
    assert blocks == [f"a: trunk pass {p}/2, block {b}/2" for p in (1, 2) for b in (1, 2)]
    assert all(re.search(r", about \d+ (s|min|h) left$", m) for m in steps if "trunk pass" in m)
    assert steps[-2] == "a: trunk pass 2/2, block 2/2, about 0 s left"  # then the protein's own line

    monkeypatch.setattr(esmfold_lite.pipeline.predict, "show_bar", lambda progress: True)  # as on a terminal
    monkeypatch.setattr(esmfold_lite.pipeline.progress, "BAR_REFRESH_S", 0.0)  # every step (1 s by default)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main([*argv[:3], str(tmp_path / "bar"), *argv[4:-1]]) == 0  # without --no-progress
    assert "a: trunk pass 2/2, block 2/2, about 0 s left" in capsys.readouterr().err
    assert not any("trunk pass" in m for m in caplog.messages), "with a bar, steps are not logged"


def test_without_a_listener_a_fold_reports_no_step(official_checkpoint, monkeypatch):
    """Outside the pipeline no listener is installed: the language model's layers and the trunk's blocks build and
    call nothing (one context-variable lookup each)."""
    model = esmfold_lite.load_model(official_checkpoint)

    def never(*args):
        raise AssertionError("a step was reported with no listener installed")

    monkeypatch.setattr(esmfold_lite.fold_progress, "FoldStep", never)
    model.fold("MKTAYIAKQR", num_recycles=1)


def test_esm_fold_flags_work_as_in_fair_esm(tmp_path, fake_models):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    argv = ["predict", "-i", str(fasta), "-o", str(outdir), "--model", "m", "--cpu-only", "--cpu-offload",
            "--chunk-size", "32", "--max-tokens-per-batch", "100", "--num-recycles", "1", "-q"]  # fmt: skip
    assert main(argv) == 0
    check_outputs(outdir, RECORDS, formats=("pdb", "json"))
    (options, model), *_ = fake_models
    assert options["device"] == "cpu" and options["lm_device"] == "cpu"
    assert [(c["chunk_size"], c["num_recycles"], len(c["sequences"])) for c in model.calls] == [(32, 1, 1)] * 3
    argv = ["predict", str(fasta), "-i", str(fasta), "-o", str(outdir), "--model", "m", "--num-recycles", "1"]
    assert main(argv) == 0 and len(fake_models) == 1, "the same input twice is one input; all complete"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the FASTA file is required"),
        (["-i", "other.fasta"], "two inputs given"),
        (["--cpu-only", "--device", "cuda"], "--cpu-only contradicts --device cuda"),
    ],
)
def test_input_and_device_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device cuda is valid; the contradiction is not
    positional = [] if argv == [] else ["in.fasta"]
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *positional, "-o", str(tmp_path / "out"), "--model", "m", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_a_terminal_one_log_line_per_protein_and_a_final_summary(tmp_path):
    records = {"p0": "MKTAYIAK", "p1": "GSHMLEDPVDAF", "bad": "MK4"}
    fasta, outdir = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out"
    process = _start_fake_cli(fasta, outdir, tmp_path / "folded.log", 0.0)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    summary = read_summary(outdir)
    for name in ("p0", "p1"):
        row = summary[name]
        line = (f"{name}: {row['length']} residues, mean pLDDT {float(row['mean_plddt']):.1f}, "
                f"pTM {float(row['ptm']):.3f}, ")  # fmt: skip
        assert sum(line in text for text in stderr.splitlines()) == 1, stderr
    assert "bad" in stderr and "'4' at 3" in stderr
    final = stderr.strip().splitlines()[-1]
    assert "finished: 3 proteins in" in stderr and "2 ok (0 skipped as complete), 1 failed" in stderr, stderr
    assert "proteins/s" in stderr and "\r" not in stderr and "it/s" not in stderr, "no progress bar in a log file"
    assert final.startswith("WARNING") and "1 of 3 proteins failed" in final
    report = json.loads((outdir / "run.json").read_text())
    assert report["status"] == "finished" and report["proteins"] == {
        "total": 3, "ok": 2, "failed": 1, "skipped_complete": 0, "folded": 2, "pending": 0,
    }  # fmt: skip


def test_two_concurrent_runs_on_one_outdir_lose_nothing_and_exit_honestly(tmp_path):
    records = {f"p{i}": "MKTAYIAKQR"[: 3 + i % 7] * (i + 1) for i in range(6)}
    fasta, outdir, log = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out", tmp_path / "folded.log"
    gate = tmp_path / "go on"
    first = _start_fake_cli(fasta, outdir, log, 0.0, gate=gate)  # holds after its first protein until `gate`
    _wait_for_ok_rows(first, outdir, 1)
    second = _start_fake_cli(fasta, outdir, log, 0.0)
    _, second_err = second.communicate(timeout=60)
    assert first.poll() is None
    gate.touch()
    assert second.returncode == 1
    assert f"is in use by another esmfold-lite run (pid {first.pid} on " in second_err
    assert "Traceback" not in second_err
    _, first_err = first.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert sorted(log.read_text().split()) == sorted(records.values()), "every protein folded once, by the first run"
    check_outputs(outdir, records, formats=("pdb", "cif", "json"))
    assert temp_files(outdir) == []


def test_other_settings_in_outdir_stop_the_cli_until_overwrite(tmp_path, fake_models, capsys):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", "m", "-q"]
    assert main(argv) == 0
    assert main([*argv, "--num-recycles", "1"]) == 1
    error = capsys.readouterr().err
    assert "made with other settings (num-recycles: not set -> 1)" in error and "--overwrite" in error
    assert len(fake_models) == 1, "the model is not even loaded"
    assert main([*argv, "--num-recycles", "1", "--overwrite"]) == 0
    assert sorted(fake_models[-1][1].folded) == sorted(RECORDS.values())


def test_renamed_duplicates_and_a_merge_into_a_used_outdir_are_logged_and_noted(tmp_path):
    """The CLI in a subprocess: a record renamed because an earlier one has its id (or a reserved name) is a warning
    naming it and its line, and its notes (summary.tsv, JSON) say so; another FASTA folded into a used OUTDIR says
    how many proteins of earlier runs it keeps."""
    first, outdir, log = tmp_path / "first.fasta", tmp_path / "out", tmp_path / "folded.log"
    first.write_text(">x first\nMKTAYIAK\n>y\nGSHMLE\n>X second\nMKVLAAGE\n>summary\nMKKWLE\n")
    process = _start_fake_cli(first, outdir, log, 0.0)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "record 3 (line 5) 'X': renamed X_2: X is an earlier record's name (names ignore case)" in stderr
    assert "record 4 (line 7) 'summary': renamed summary_2: summary is reserved for the run's own files" in stderr
    assert "earlier run" not in stderr, "a new OUTDIR holds nothing of other runs"
    summary = read_summary(outdir)
    assert list(summary) == ["x", "y", "X_2", "summary_2"]
    assert summary["X_2"]["notes"] == "renamed X_2: X is an earlier record's name (names ignore case)"
    assert summary["x"]["notes"] == "" and summary["X_2"]["header"] == "X second"
    assert json.loads((outdir / "X_2.json").read_text())["notes"] == [summary["X_2"]["notes"]]

    second = write_fasta(tmp_path / "second.fasta", {"y": "GSHMLE", "z": "MKTAYIAKQ"})
    process = _start_fake_cli(second, outdir, log, 0.0)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert (
        f"{outdir.resolve()} already holds 3 protein(s) from an earlier run of another input (not in {second}): "
        "they are kept, and summary.tsv lists them beside this run's" in stderr
    )
    assert list(read_summary(outdir)) == ["x", "y", "X_2", "summary_2", "z"]
    assert sorted(log.read_text().split()) == sorted(["MKTAYIAK", "GSHMLE", "MKVLAAGE", "MKKWLE", "MKTAYIAKQ"])

    third = write_fasta(tmp_path / "third.fasta", {"z": "MKVLAAGEW"})  # z again, with another sequence
    process = _start_fake_cli(third, outdir, log, 0.0)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    replaced = "replaces an earlier protein of this name (another sequence) in OUTDIR"
    assert f"record 1 (line 1) z: {replaced}" in stderr
    assert read_summary(outdir)["z"]["notes"] == replaced


def test_a_utf16_fasta_is_decoded_logged_and_folded(tmp_path):
    """A FASTA saved as UTF-16 (a Windows editor's "Unicode") folds like its UTF-8 copy; the log says it was decoded."""
    fasta, outdir = tmp_path / "in.fasta", tmp_path / "out"
    fasta.write_text("".join(f">{name} a protein\n{seq}\n" for name, seq in RECORDS.items()), encoding="utf-16")
    process = _start_fake_cli(fasta, outdir, tmp_path / "folded.log", 0.0)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert f"{fasta} is UTF-16 (with a byte-order mark) text: decoding it" in stderr
    assert "before the first '>' header" not in stderr
    check_outputs(outdir, RECORDS, formats=("pdb", "cif", "json"))
    assert [row["header"] for row in read_summary(outdir).values()] == [f"{name} a protein" for name in RECORDS]
