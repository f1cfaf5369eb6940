"""Trust at the edges: a full or failing disk at every write site, and a damaged run state or work queue.

A full disk is injected where the atomic writer syncs a file (``io.atomic._fsync_file``: the data is in the temporary
file, as ``fsync`` reports ENOSPC or EIO with delayed allocation) or in its ``write`` (half the data written), for the
one file named; SQLite is stopped from growing with ``PRAGMA max_page_count``, which gives its real "database or disk
is full". Every case: exit status 1 with one line naming the file, no traceback (only in the debug log), no temporary
or partial file, nothing recorded as complete whose files did not land, and the same command run again completes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from fake_esmfold import FakeFolder, patch_load_model
from test_predict_cli import _start_fake_cli, check_outputs, read_summary, temp_files, write_fasta

import esmfold_lite
from esmfold_lite.cli import main
from esmfold_lite.io import atomic
from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.run_state import DAMAGED_STATE_FIX, OutdirError, open_run_state
from esmfold_lite.pipeline.work_queue import WorkQueue

RECORDS = {"p0": "MKVLAA", "p1": "GSHMKTAYIAKQ", "p2": "MKTAYIAKQRQISFVKSHFS"}  # folded in this order, one at a time
FORMATS = ("pdb", "json")
REASONS = {
    errno.ENOSPC: "the disk is full (No space left on device)",
    errno.EIO: "the write failed (Input/output error)",
}


@pytest.fixture
def models(monkeypatch) -> list[FakeFolder]:
    """the pipeline's ``load_model`` gives a new ``FakeFolder``; the list holds every one loaded."""
    loaded: list[FakeFolder] = []

    def load_model(source, **kwargs):
        loaded.append(FakeFolder())
        return loaded[-1]

    patch_load_model(monkeypatch, load_model)
    return loaded


def folded(models: list[FakeFolder]) -> list[str]:
    """The sequences folded by the models loaded so far (emptied: the next call tells the next run's)."""
    sequences = [sequence for model in models for sequence in model.folded]
    models.clear()
    return sorted(sequences)


def predict(fasta: Path, outdir: Path, *more: str) -> int:
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", "fake", "--formats", ",".join(FORMATS)]
    return main([*argv, "--max-tokens-per-batch", "1", "--no-progress", *more])


def state_path(outdir: Path) -> Path:
    return outdir.resolve() / ".esmfold-lite" / "state.sqlite"


def complete_ids(outdir: Path) -> set[str]:
    """Proteins with a committed completion record, each of whose files is there (checked here)."""
    uri = f"file:{state_path(outdir)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT id, files FROM proteins WHERE status = 'ok'").fetchall()
    for name, files in rows:
        assert sorted(json.loads(files)) == sorted(FORMATS)
        for fmt, (size, _, _) in json.loads(files).items():
            assert (outdir / f"{name}.{fmt}").stat().st_size == size, "a complete protein's files all landed"
    return {name for name, _ in rows}


def error_line(capsys, command: str = "predict") -> str:
    """The one line of the error; stderr holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"esmfold-lite {command}: error: ")
    return last


class _FailingHandle:
    """A file whose ``write`` stores half the data, then fails with ``err``: a disk filling up mid-write."""

    def __init__(self, handle, err: int) -> None:
        self.handle, self.err = handle, err

    def __enter__(self) -> _FailingHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(self.err, os.strerror(self.err))


def disk_fails(monkeypatch: pytest.MonkeyPatch, name: str, err: int = errno.ENOSPC, at: str = "fsync") -> None:
    """Atomic writes of the file ``name`` fail with ``err``, at ``fsync`` (all data in the temporary file) or in
    ``write`` (half of it there)."""

    def aimed(path: os.PathLike) -> bool:
        return Path(path).name.startswith(f".{name}.")

    if at == "fsync":
        real_fsync = atomic._fsync_file

        def fsync(path: Path) -> None:
            if aimed(path):
                assert path.stat().st_size > 0
                raise OSError(err, os.strerror(err))
            real_fsync(path)

        monkeypatch.setattr(atomic, "_fsync_file", fsync)
    else:

        def failing_open(path, mode="r", *args, **kwargs):
            handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the wrapper
            return _FailingHandle(handle, err) if aimed(path) else handle

        monkeypatch.setattr(atomic, "open", failing_open, raising=False)


# --- a full or failing disk --------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", ["fsync", "write"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_a_protein_file_that_cannot_be_written_stops_the_run_and_the_rerun_completes(
    tmp_path, models, monkeypatch, capsys, caplog, err, at
):
    caplog.set_level(logging.INFO)
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    with monkeypatch.context() as patch:
        disk_fails(patch, "p1.json", err, at)
        assert predict(fasta, outdir) == 1
    line = error_line(capsys)
    assert f"cannot write {outdir.resolve() / 'p1.json'}: {REASONS[err]}; the proteins finished so far are kept" in line
    assert "Traceback" not in caplog.text
    assert temp_files(outdir) == [] and not (outdir / "p1.json").exists()
    assert complete_ids(outdir) == {"p0"}
    assert {name: row["status"] for name, row in read_summary(outdir).items()} == {
        "p0": "ok", "p1": "pending", "p2": "pending",
    }  # fmt: skip
    assert json.loads((outdir / "run.json").read_text())["status"] == "failed"
    assert folded(models) == sorted(RECORDS[name] for name in ("p0", "p1"))

    assert predict(fasta, outdir) == 0  # the disk has room again
    assert folded(models) == sorted(RECORDS[name] for name in ("p1", "p2"))
    check_outputs(outdir, RECORDS, formats=FORMATS)
    assert complete_ids(outdir) == set(RECORDS) and temp_files(outdir) == []


@pytest.mark.parametrize("name", ["summary.tsv", "run.json"])
def test_a_full_disk_at_the_summary_or_run_report_stops_the_run(tmp_path, models, monkeypatch, capsys, name):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    outdir.mkdir()
    with monkeypatch.context() as patch:
        disk_fails(patch, name)
        assert predict(fasta, outdir) == 1
    assert f"cannot write {outdir.resolve() / name}: the disk is full (No space left on device)" in error_line(capsys)
    assert temp_files(outdir) == [] and not (outdir / name).exists()
    # summary.tsv is first written before folding; run.json after the first protein, which is recorded: its files did
    done = set() if name == "summary.tsv" else {"p0"}
    assert complete_ids(outdir) == done and folded(models) == sorted(RECORDS[name] for name in done)

    assert predict(fasta, outdir) == 0
    assert folded(models) == sorted(sequence for name, sequence in RECORDS.items() if name not in done)
    check_outputs(outdir, RECORDS, formats=FORMATS)
    assert complete_ids(outdir) == set(RECORDS)


class _StateConnection(sqlite3.Connection):
    """The run state's database, whose commit of completion records fails: ``full`` for real (the database may not
    grow: SQLite's ``max_page_count``), ``io`` as SQLite reports a failing disk."""

    failure = "full"

    def executemany(self, sql, rows):
        rows = list(rows)
        if sql.startswith("INSERT INTO proteins") and any("ok" in row for row in rows):
            if self.failure == "io":
                exc = sqlite3.OperationalError("disk I/O error")
                exc.sqlite_errorcode, exc.sqlite_errorname = 778, "SQLITE_IOERR_WRITE"
                raise exc
            (pages,) = self.execute("PRAGMA page_count").fetchone()
            self.execute(f"PRAGMA max_page_count = {pages}")
        return super().executemany(sql, rows)


@pytest.mark.parametrize(("failure", "reason"), [("full", "the disk is full"), ("io", "the disk failed")])
def test_a_state_commit_that_fails_records_nothing_and_the_rerun_completes(
    tmp_path, models, monkeypatch, capsys, failure, reason
):
    records = {f"q{i}": RECORDS["p2"][: 8 + i % 10] for i in range(40)}  # their records need more than a page
    fasta, outdir = write_fasta(tmp_path / "in.fasta", records), tmp_path / "out"
    real_connect = sqlite3.connect

    def connect(path, *args, **kwargs):
        if Path(path).name == "state.sqlite":
            kwargs["factory"] = _StateConnection
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(_StateConnection, "failure", failure)
    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", connect)
        assert predict(fasta, outdir, "--max-tokens-per-batch", "4096") == 1
    line = error_line(capsys)
    verb = "read or write" if failure == "io" else "write"
    assert f"cannot {verb} {state_path(outdir)}: {reason} (" in line and "the proteins finished so far are kept" in line
    assert complete_ids(outdir) == set() and temp_files(outdir) == []
    assert {row["status"] for row in read_summary(outdir).values()} == {"pending"}
    assert folded(models) == sorted(records.values())

    assert predict(fasta, outdir) == 0
    assert folded(models) == sorted(records.values()) and complete_ids(outdir) == set(records)
    check_outputs(outdir, records, formats=FORMATS)


def test_a_full_disk_when_the_run_starts_leaves_nothing_behind(tmp_path, models, monkeypatch, capsys):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "new" / "out"
    with monkeypatch.context() as patch:
        disk_fails(patch, "owner.json")
        assert predict(fasta, outdir) == 1
    owner = tmp_path.resolve() / "new" / "out" / ".esmfold-lite" / "owner.json"
    assert f"cannot write {owner}: the disk is full" in error_line(capsys)
    assert not (tmp_path / "new").exists() and models == []
    assert predict(fasta, outdir) == 0


def test_a_report_that_cannot_be_written_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    outdir = tmp_path / "out"
    esmfold_lite.predict_fasta(write_fasta(tmp_path / "in.fasta", RECORDS), outdir, model=FakeFolder(),
                               formats=FORMATS, progress=False)  # fmt: skip
    for err in (errno.ENOSPC, errno.EIO):
        with monkeypatch.context() as patch:
            disk_fails(patch, "report.html", err, at="write")
            assert main(["report", str(outdir), "-j", "1"]) == 1
        assert f"cannot write {outdir / 'report.html'}: {REASONS[err]}" in error_line(capsys, "report")
        assert temp_files(outdir) == [] and not (outdir / "report.html").exists()
    assert main(["report", str(outdir), "-j", "1"]) == 0
    assert (outdir / "report.html").read_text().rstrip().endswith("</html>")


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> str:
    """A tiny ESM-2 in esmfold_lite's own format."""
    from esmfold_lite.lm.esm2 import ESM2, ESM2Config
    from esmfold_lite.weights.esm2_format import save_esm2

    model = ESM2(ESM2Config(num_layers=1, embed_dim=16, attention_heads=2)).eval()
    return str(save_esm2(model, tmp_path_factory.mktemp("lm") / "tiny").with_suffix(".safetensors"))


@pytest.mark.parametrize(("name", "err"), [("b.pt", errno.ENOSPC), ("b.pt", errno.EIO), ("manifest.tsv", errno.ENOSPC)])
def test_an_embedding_or_manifest_that_cannot_be_written_stops_embed(
    tmp_path, language_model, monkeypatch, capsys, name, err
):
    fasta, out = tmp_path / "in.fasta", tmp_path / "out"
    fasta.write_text(">a\nMKTAYIAK\n>b\nMLVWG\n>c\nGSHMKT\n")
    argv = ["embed", str(fasta), "-o", str(out), "--model", language_model, "-q"]
    with monkeypatch.context() as patch:
        disk_fails(patch, name, err)
        assert main(argv) == 1
    assert f"cannot write {out / name}: {REASONS[err]}; no partial file was left" in error_line(capsys, "embed")
    assert temp_files(out) == [] and not (out / name).exists() and not (out / "manifest.tsv").exists()

    assert main(argv) == 0
    rows = [line.split("\t") for line in (out / "manifest.tsv").read_text().splitlines()[1:]]
    assert [(row[1], row[3]) for row in rows] == [("a.pt", "ok"), ("b.pt", "ok"), ("c.pt", "ok")]


# --- a damaged run state -----------------------------------------------------------------------------------------


def results(outdir: Path) -> dict[str, int]:
    """mtime of every file in OUTDIR but the run state."""
    return {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.name != ".esmfold-lite"}


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    assert len(data) > 4096, "the run state spans several pages"
    if how == "truncated":
        path.write_bytes(data[:10])
    elif how == "first_page_only":
        path.write_bytes(data[:4096])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 20)
    elif how == "garbage_pages":
        path.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "no_tables":  # a sound SQLite file that holds nothing
        path.unlink()
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 1")
    else:  # an SQLite file of something else
        path.unlink()
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.executescript("CREATE TABLE proteins (name TEXT); INSERT INTO proteins VALUES ('x');")


@pytest.mark.parametrize(
    "how", ["truncated", "first_page_only", "garbage", "garbage_pages", "foreign", "empty", "no_tables"]
)
def test_a_damaged_state_is_refused_with_the_fix_and_overwrite_recovers(tmp_path, models, capsys, caplog, how):
    caplog.set_level(logging.INFO)
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    assert predict(fasta, outdir) == 0
    folded(models)
    _damage(state_path(outdir), how)
    damaged = state_path(outdir).read_bytes()
    stamps = results(outdir)

    assert predict(fasta, outdir) == 1
    line = error_line(capsys)
    assert f"{state_path(outdir)} is damaged (" in line and line.endswith(f"); {DAMAGED_STATE_FIX}")
    assert "new output directory" in line and "Traceback" not in caplog.text
    assert models == [] and results(outdir) == stamps
    assert state_path(outdir).read_bytes() == damaged, "left as it is, until --overwrite"

    assert predict(fasta, outdir, "--overwrite") == 0
    assert f"{state_path(outdir)} is damaged" in caplog.text  # the warning of the replacement
    assert folded(models) == sorted(RECORDS.values())
    check_outputs(outdir, RECORDS, formats=FORMATS)
    assert complete_ids(outdir) == set(RECORDS)
    assert predict(fasta, outdir) == 0 and folded(models) == []


def test_an_emptied_state_file_refuses_other_settings_and_input_until_overwrite(tmp_path):
    """The CLI in a subprocess: a 0-byte state.sqlite is not a new OUTDIR (with other settings and another FASTA the
    old structures would stay beside the new); --overwrite folds again and the run is whole."""
    first = write_fasta(tmp_path / "first.fasta", RECORDS)
    second = write_fasta(tmp_path / "second.fasta", {"q0": "MKTAYIAKQ", **RECORDS})
    outdir, log = tmp_path / "out", tmp_path / "folded.log"

    def run(fasta: Path, *more: str) -> subprocess.CompletedProcess:
        process = _start_fake_cli(fasta, outdir, log, 0.0, "--no-progress", *more)
        stdout, stderr = process.communicate(timeout=120)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    assert run(first).returncode == 0
    state_path(outdir).write_bytes(b"")
    stamps, log_before = results(outdir), log.read_text()

    refused = run(second, "--num-recycles", "1")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line == (
        f"esmfold-lite predict: error: {state_path(outdir)} is damaged (empty file (0 bytes), not an esmfold-lite "
        f"run state); {DAMAGED_STATE_FIX}"
    )
    assert log.read_text() == log_before and results(outdir) == stamps and state_path(outdir).read_bytes() == b""

    assert run(second, "--num-recycles", "1", "--overwrite").returncode == 0
    assert sorted(log.read_text().split()) == sorted([*RECORDS.values(), *RECORDS.values(), "MKTAYIAKQ"])
    check_outputs(outdir, {"q0": "MKTAYIAKQ", **RECORDS}, formats=("pdb", "cif", "json"))
    assert run(second, "--num-recycles", "1").returncode == 0 and len(log.read_text().split()) == 7


def test_a_state_this_run_creates_is_never_seen_empty(tmp_path, monkeypatch):
    """The run state appears with its tables in one step: a run killed while creating it leaves only a temporary
    file, which the next run removes, and that run starts afresh."""
    outdir = tmp_path / "out"
    outdir.mkdir()  # kept when the run produces nothing
    made = []
    real_connect = sqlite3.connect

    def connect(path, *args, **kwargs):
        if Path(str(path).split("?")[0].removeprefix("file:")).name == "state.sqlite":
            made.append(os.path.getsize(state_path(outdir)))  # the file is there, whole, when it is first opened
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    with open_run_state(outdir) as state:
        assert state.counts() == {}
    assert made and made[0] > 0
    killed = state_path(outdir).with_name(".state.sqlite.0123456789ab.tmp.sqlite")
    state_path(outdir).unlink()
    killed.write_bytes(b"")  # what a run killed while creating its state leaves
    with open_run_state(outdir) as state:
        assert state.counts() == {} and not killed.exists()


def test_the_traceback_is_only_in_the_debug_log(tmp_path, models, capsys, caplog):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    assert predict(fasta, outdir) == 0
    state_path(outdir).write_bytes(b"garbage" * 1000)
    caplog.set_level(logging.DEBUG)
    assert predict(fasta, outdir, "-vv") == 1
    assert "is damaged" in error_line(capsys) and "Traceback" in caplog.text


def test_a_garbage_owner_or_lock_file_does_not_matter(tmp_path, models, capsys):
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    assert predict(fasta, outdir) == 0
    folded(models)
    state_dir = outdir / ".esmfold-lite"
    for owner in (b"\xff\xfe{garbage", b'{"pid": 1, "host": "h", "started": 1e300}'):
        (state_dir / "owner.json").write_bytes(owner)
        (state_dir / "lock").write_bytes(b"\x00garbage")
        with open_run_state(outdir):  # another run holds OUTDIR; its owner.json is damaged
            (state_dir / "owner.json").write_bytes(owner)
            assert predict(fasta, outdir) == 1
        assert "is in use by another esmfold-lite run;" in error_line(capsys)
    (state_dir / "owner.json").write_bytes(b"\xff\xfe{garbage")
    assert predict(fasta, outdir) == 0 and folded(models) == []
    assert json.loads((state_dir / "owner.json").read_text())["pid"] == os.getpid()


def test_fold_proteome_refuses_a_damaged_state_with_the_fix(tmp_path, capsys):
    pytest.importorskip("ray")
    fasta, outdir = write_fasta(tmp_path / "in.fasta", RECORDS), tmp_path / "out"
    state_path(outdir).parent.mkdir(parents=True)
    state_path(outdir).write_bytes(b"garbage" * 1000)
    assert main(["fold-proteome", str(fasta), "-o", str(outdir), "--model", "fake", "--no-progress"]) == 1
    line = error_line(capsys, "fold-proteome")
    assert f"{state_path(outdir)} is damaged" in line and "--overwrite" in line


# --- the fold-proteome work queue --------------------------------------------------------------------------------


def _job(index: int, name: str, length: int) -> FoldJob:
    return FoldJob(index, name, name, "M" * length, length, length)


@pytest.mark.parametrize("how", ["garbage", "truncated", "garbage_journal"])
def test_a_damaged_leftover_queue_is_replaced(tmp_path, how):
    path = tmp_path / "queue.sqlite"
    killed = WorkQueue(path)  # a driver killed mid-run leaves its queue
    killed.add(_job(0, "old", 3))
    killed.commit()
    killed.db.close()
    if how == "garbage":
        path.write_bytes(b"\x00garbage" * 600)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:7])
    else:
        path.with_name("queue.sqlite-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\xa5" * 2000)
    queue = WorkQueue(path)
    for i, length in enumerate((5, 9)):
        queue.add(_job(i, f"new{i}", length))
    queue.commit()
    assert [[job.name for job in unit] for unit in queue.units(100)] == [["new1", "new0"]]
    queue.close()
    assert not path.exists() and not path.with_name("queue.sqlite-journal").exists()


def test_a_directory_where_the_queue_goes_is_named(tmp_path):
    (tmp_path / "queue.sqlite").mkdir()
    with pytest.raises(OutdirError, match=r"cannot remove .*queue\.sqlite: .*; remove it yourself"):
        WorkQueue(tmp_path / "queue.sqlite")


def test_a_full_disk_while_queueing_names_the_queue(tmp_path):
    path = tmp_path / "queue.sqlite"
    queue = WorkQueue(path)
    (pages,) = queue.db.execute("PRAGMA page_count").fetchone()
    queue.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    with pytest.raises(OutdirError) as raised:
        for i in range(100):
            queue.add(_job(i, f"p{i}", 1000))
            queue.commit()
    message = str(raised.value)
    assert message.startswith(f"cannot write {path}: the disk is full (database or disk is full); ")
    assert "run the same command again" in message
    queue.close()
