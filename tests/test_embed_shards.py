"""``embed --format safetensors``: shards + index, the reader, duplicates, resume (also after a SIGKILL)."""

import errno
import importlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from randomize import randomize_

from esmfold_lite import open_embeddings
from esmfold_lite.cli import main
from esmfold_lite.io.tsv import unescape_field
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.weights.esm2_format import save_esm2

TOL = dict(atol=1e-5, rtol=1e-5)
AMINO = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def model() -> ESM2:
    model = ESM2(ESM2Config(num_layers=2, embed_dim=16, attention_heads=2)).eval()
    randomize_(model)
    return model


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    return str(save_esm2(model, tmp_path_factory.mktemp("weights") / "tiny").with_suffix(".safetensors"))


def sequences(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 80, (n,), generator=g)
    return ["".join(AMINO[i] for i in torch.randint(0, 20, (int(k),), generator=g)) for k in lengths]


def write_fasta(path, records):
    path.write_text("".join(f">{id} some description\n{seq}\n" for id, seq in records))
    return path


def read_manifest(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "id\tfile\tlength\tstatus"
    return [line.split("\t") for line in lines[1:]]


def test_shards_hold_what_one_file_per_sequence_holds(model, saved_model, tmp_path, caplog, monkeypatch):
    seqs = sequences(12)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    flags = ["--model", saved_model, "--layers", "0", "-1", "--contacts", "--logits", "--max-tokens-per-batch", "200"]
    monkeypatch.setenv("ESMFOLD_LITE_PROGRESS_INTERVAL", "0")  # no terminal: a progress line at every chunk
    with caplog.at_level("INFO"):
        assert main(["embed", str(fasta), "-o", str(tmp_path / "sh"), "--format", "safetensors", "--shard-size",
                     "0.01", *flags]) == 0  # fmt: skip
    progress = [m for m in caplog.messages if m.startswith("embed: ")]  # counted ahead: a total, rates, time left
    assert progress[-1].startswith("embed: 12 of 12 seq (100%), ") and "seq/s; " in progress[-1], progress
    assert progress[-1].endswith(" res/s") and all(" left; " in m for m in progress[:-1])
    assert main(["embed", str(fasta), "-o", str(tmp_path / "pt"), *flags]) == 0

    shards = sorted((tmp_path / "sh" / "shards").iterdir())
    assert len(shards) > 1 and all(re.fullmatch(r"shard-\d{6}\.safetensors", p.name) for p in shards)
    store = open_embeddings(tmp_path / "sh")
    assert len(store) == 12 and list(store) == [f"p{i}" for i in range(12)] and store.layers == [0, 2]
    assert "p3" in store and "nope" not in store
    with pytest.raises(KeyError):
        store["nope"]
    for i, seq in enumerate(seqs):
        got, want = store[f"p{i}"], torch.load(tmp_path / "pt" / f"p{i}.pt")
        assert got["label"] == want["label"] and got["sequence"] == seq
        for key in ("representations", "mean_representations", "bos_representations"):
            assert sorted(got[key]) == [0, 2]
            for layer in (0, 2):
                torch.testing.assert_close(got[key][layer], want[key][layer], **TOL)
        torch.testing.assert_close(got["contacts"], want["contacts"], **TOL)
        torch.testing.assert_close(got["logits"], want["logits"], **TOL)
    rows = read_manifest(tmp_path / "sh" / "manifest.tsv")
    assert sorted(r[0] for r in rows) == sorted(f"p{i}" for i in range(12))
    assert {r[3] for r in rows} == {"ok"} and all(r[1].startswith("shards/shard-") for r in rows)


def test_duplicates_and_bad_records_are_reported_per_record(saved_model, tmp_path, caplog):
    a, b, c = sequences(3, seed=1)
    fasta = write_fasta(tmp_path / "in.fasta", [("x", a), ("bad", "MK1L"), ("x", b), ("y", c), ("x", a)])
    out = tmp_path / "out"
    assert main(["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]) == 3
    rows = {(r[0], r[3].split(":")[0]) for r in read_manifest(out / "manifest.tsv")}
    statuses = [r[3] for r in read_manifest(out / "manifest.tsv")]
    assert sum(s.startswith("skipped: duplicate id") for s in statuses) == 2
    assert ("y", "ok") in rows and ("bad", "skipped") in rows
    assert f"{fasta} line 1 has the same id" in caplog.text
    store = open_embeddings(out)
    assert sorted(store) == ["x", "y"] and store["x"]["sequence"] == a


def test_rerun_resumes_and_refuses_other_settings(model, saved_model, tmp_path, caplog):
    seqs = sequences(10, seed=2)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs[:6])])
    out = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]
    assert main(argv + ["--shard-size", "0.005"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}

    write_fasta(fasta, [(f"p{i}", s) for i, s in enumerate(seqs)])  # 4 records more
    caplog.clear()
    caplog.set_level("INFO")
    assert main(argv + ["--shard-size", "0.005"]) == 0
    assert "embedded 4 sequences" in caplog.text and "6 embedded before" in caplog.text
    assert all((out / "shards" / name).stat().st_mtime_ns == ns for name, ns in before.items())
    store = open_embeddings(out)
    assert sorted(store) == sorted(f"p{i}" for i in range(10))
    expected = model.embed(seqs)
    for i in range(10):
        torch.testing.assert_close(store[f"p{i}"]["representations"][2], expected.representations[-1][i], **TOL)

    assert main(argv + ["--layers", "1"]) == 1  # other settings: refused, nothing touched
    assert all((out / "shards" / name).exists() for name in before)
    write_fasta(fasta, [("p0", seqs[1]), ("new", seqs[1])])  # a known id with another sequence
    assert main(argv) == 3
    rows = read_manifest(out / "manifest.tsv")
    assert "holds this id embedded from another sequence" in rows[0][3] and rows[1][::3] == ["new", "ok"]
    assert main(argv + ["--layers", "1", "--overwrite"]) == 0
    assert list(open_embeddings(out)) == ["p0", "new"] and open_embeddings(out).layers == [1]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_writes_what_waits_for_a_shard(signum, status, saved_model, tmp_path, monkeypatch, caplog):
    command = importlib.import_module("esmfold_lite.pipeline.embedding")  # where embed_fasta takes embed() from

    seqs = sequences(30, seed=4)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    real, calls = command.embed, []

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                pytest.fail("embed runs without its own SIGINT/SIGTERM handler")  # the signal would stop pytest
            os.kill(os.getpid(), signum)  # as Ctrl-C or `kill` would
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "embed", interrupted_second_time)
    argv = ["embed", str(fasta), "-o", str(tmp_path / "out"), "--model", saved_model, "--format", "safetensors",
            "--max-tokens-per-batch", "64"]  # fmt: skip  (chunks of 8 x 64 tokens: several chunks, one shard)
    try:
        assert main(argv) == status  # like predict: a warning line, not a traceback
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended embed with a KeyboardInterrupt traceback")
    first = len(open_embeddings(tmp_path / "out"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert 0 < first < 30 and len(warnings) == 1 and "interrupted" in warnings[0]
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert [r[0] for r in rows] == [f"p{i}" for i in range(first)] and {r[3] for r in rows} == {"ok"}
    monkeypatch.setattr(command, "embed", real)
    caplog.clear()
    caplog.set_level("INFO")
    assert main(argv) == 0 and f"{first} embedded before" in caplog.text
    assert len(open_embeddings(tmp_path / "out")) == 30


def test_manifest_is_in_input_order(saved_model, tmp_path):
    a, b, c = sequences(3, seed=5)
    fasta = write_fasta(tmp_path / "in.fasta", [("a", a), ("bad", "MK1L"), ("b", b), ("a", c), ("c", c)])
    argv = ["embed", str(fasta), "-o", str(tmp_path / "out"), "--model", saved_model, "--format", "safetensors"]
    assert main(argv) == 3
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert [(r[0], r[3].split(":")[0]) for r in rows] == [
        ("a", "ok"), ("bad", "skipped"), ("b", "ok"), ("a", "skipped"), ("c", "ok")
    ]  # fmt: skip
    write_fasta(fasta, [("new", a[:30]), ("b", b), ("bad", "MK1L"), ("a", a)])  # resumed: done ones in place too
    assert main(argv) == 3
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert [(r[0], r[3].split(":")[0]) for r in rows] == [("new", "ok"), ("b", "ok"), ("bad", "skipped"), ("a", "ok")]


def kill_in_the_middle_of_a_commit(index):
    """Leave ``index`` as a run SIGKILLed while committing leaves it: a hot ``index.sqlite-journal``."""
    code = f"""if True:
        import os, signal, sqlite3
        db = sqlite3.connect({str(index)!r}, isolation_level=None)
        db.execute("PRAGMA cache_size=1")  # pages reach the database file before the commit, as a big commit's do
        db.execute("BEGIN")
        db.executemany("INSERT INTO embeddings VALUES (?, ?, 1, 'shards/x', 0, 0, NULL)",
                       [(f"ghost{{i}}", "M" * 500) for i in range(300)])
        os.kill(os.getpid(), signal.SIGKILL)
    """
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    journal = index.with_name(index.name + "-journal")
    assert journal.stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what a plain read-only reader gets
        sqlite3.connect(f"{index.as_uri()}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM embeddings")
    return journal


def test_reader_recovers_an_index_left_by_a_killed_commit(saved_model, tmp_path, monkeypatch):
    from esmfold_lite.pipeline import embedding_shards
    from esmfold_lite.pipeline.outdir_lock import OutdirError

    seqs = sequences(3, seed=6)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    out = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]
    assert main(argv) == 0
    kill_in_the_middle_of_a_commit(out / "index.sqlite")

    monkeypatch.setattr(embedding_shards.os, "access", lambda *args, **kwargs: False)  # a read-only OUTDIR
    with pytest.raises(OutdirError, match="killed run .* run the same `esmfold-lite embed` command again"):
        open_embeddings(out)
    monkeypatch.undo()
    store = open_embeddings(out)  # writable: the killed commit is rolled back
    assert sorted(store) == ["p0", "p1", "p2"] and store["p1"]["sequence"] == seqs[1]
    assert not (out / "index.sqlite-journal").exists()
    kill_in_the_middle_of_a_commit(out / "index.sqlite")
    assert main(argv) == 0 and sorted(open_embeddings(out)) == ["p0", "p1", "p2"]  # the command recovers it too


def test_include_means_only_and_readable_errors_for_what_was_not_saved(model, saved_model, tmp_path, capsys):
    seqs = sequences(4, seed=7)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    out = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]
    assert main(argv + ["--include", "mean", "--shard-size", "0.0001"]) == 0
    store = open_embeddings(out)
    assert store.include == ["mean"] and sorted(store) == ["p0", "p1", "p2", "p3"]
    expected = model.embed(seqs)
    for i in range(4):
        got = store[f"p{i}"]
        assert sorted(got) == ["label", "mean_representations", "sequence"]
        torch.testing.assert_close(got["mean_representations"][2], expected.mean[-1][i], **TOL)
    with pytest.raises(KeyError, match="'representations' was not saved .* --include per_tok"):
        store["p0"]["representations"]
    with pytest.raises(KeyError, match="--contacts"):
        store["p0"]["contacts"]
    shard_bytes = sum(p.stat().st_size for p in (out / "shards").iterdir())
    assert shard_bytes < 4 * 16 * 4 * 4  # a few means, no per-residue arrays

    capsys.readouterr()
    assert main(argv + ["--include", "mean", "per_tok"]) == 1  # other arrays: refused like other settings
    assert "include" in capsys.readouterr().err
    assert main(argv + ["--include", "mean"]) == 0  # the same: resumes
    assert main(argv + ["--include", "per_tok", "contacts", "--overwrite"]) == 0
    got = open_embeddings(out)["p2"]
    assert sorted(got) == ["contacts", "label", "representations", "sequence"]
    torch.testing.assert_close(got["representations"][2], expected.representations[-1][2], **TOL)


def test_damaged_index_is_refused_naming_the_fix(saved_model, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fasta", [("a", sequences(1)[0])])
    out = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]
    assert main(argv) == 0
    (out / "index.sqlite").write_bytes(b"not a database" * 100)
    assert main(argv) == 1
    assert "index.sqlite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0 and list(open_embeddings(out)) == ["a"]
    (tmp_path / "file").write_text("")
    argv[3] = str(tmp_path / "file")
    assert main(argv) == 1
    assert "file exists and is not a directory" in capsys.readouterr().err


def test_an_emptied_index_is_refused_and_its_shards_are_kept(saved_model, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fasta", [("a", sequences(1)[0])])
    out = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors"]
    assert main(argv) == 0
    shards = {path: path.read_bytes() for path in (out / "shards").iterdir()}
    (out / "index.sqlite").write_bytes(b"")  # not a new index: taken for one, its shards would be deleted as orphans
    assert main([*argv, "--layers", "1"]) == 1
    assert (
        f"{out.resolve() / 'index.sqlite'} is damaged (empty file (0 bytes), not an esmfold-lite embedding index); "
        "which sequences are embedded is lost: run again with --overwrite" in capsys.readouterr().err
    )
    assert {path: path.read_bytes() for path in (out / "shards").iterdir()} == shards
    assert main(argv + ["--overwrite"]) == 0 and list(open_embeddings(out)) == ["a"]


def test_the_manifest_escapes_control_characters_of_an_id(saved_model, tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_bytes(b">a\x01b\\c\x00d desc\n" + sequences(1)[0].encode() + b"\n")
    out = tmp_path / "out"
    assert main(["embed", str(fasta), "-o", str(out), "--model", saved_model, "--format", "safetensors", "-q"]) == 0
    ((id, _, _, status),) = read_manifest(out / "manifest.tsv")  # one line of four fields
    assert status == "ok"
    assert id == "a\\x01b\\\\c\\0d" and unescape_field(id) == "a\x01b\\c\x00d"
    assert list(open_embeddings(out)) == ["a\x01b\\c\x00d"]


@pytest.mark.parametrize("fails", ["index", "embedding"])
def test_a_run_that_writes_nothing_leaves_no_outdir_it_created(saved_model, tmp_path, monkeypatch, fails):
    import esmfold_lite.pipeline.embedding_shards as shards

    command = importlib.import_module("esmfold_lite.pipeline.embedding")  # where embed_fasta takes embed() from

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fasta = write_fasta(tmp_path / "in.fasta", [("a", sequences(1)[0])])
    argv = ["embed", str(fasta), "-o", str(tmp_path / "new" / "out"), "--model", saved_model, "--format", "safetensors"]
    if fails == "index":  # the index cannot be created
        monkeypatch.setattr(shards, "checked_connection", disk_full)
        assert main(argv) == 1
    else:  # the index is there, the first embedding fails
        monkeypatch.setattr(command, "embed", disk_full)
        with pytest.raises(OSError):
            main(argv)
    assert sorted(os.listdir(tmp_path)) == ["in.fasta"]


@pytest.mark.slow
def test_a_killed_run_resumes_without_embedding_anything_twice(model, saved_model, tmp_path):
    seqs = sequences(400, seed=3)
    fasta = write_fasta(tmp_path / "in.fasta", [(f"p{i}", s) for i, s in enumerate(seqs)])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "esmfold_lite.cli", "embed", str(fasta), "-o", str(out), "--model", saved_model,
            "--format", "safetensors", "--shard-size", "0.01", "--max-tokens-per-batch", "256", "-v"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    deadline = time.monotonic() + 120
    while done < 100 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.01)
        try:
            with sqlite3.connect(f"{(out / 'index.sqlite').as_uri()}?mode=ro", uri=True) as db:
                done = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        except sqlite3.Error:
            pass
    run.send_signal(signal.SIGKILL)
    run.wait()
    with sqlite3.connect(out / "index.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        committed = [shard for (shard,) in db.execute("SELECT DISTINCT shard FROM embeddings")]
    assert 0 < done < len(seqs), "the run was not killed halfway"
    kept = {shard: (out / shard).read_bytes() for shard in committed}

    second = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    match = re.search(r"embedded (\d+) sequences .* (\d+) embedded before, 0 skipped", second.stderr)
    assert match and (int(match[1]), int(match[2])) == (len(seqs) - done, done)
    store = open_embeddings(out)
    assert sorted(store) == sorted(f"p{i}" for i in range(len(seqs)))  # every id exactly once (the primary key)
    assert all((out / shard).read_bytes() == data for shard, data in kept.items())  # nothing rewritten
    expected = model.embed([seqs[0], seqs[-1]])
    torch.testing.assert_close(store["p0"]["representations"][2], expected.representations[-1][0], **TOL)
    torch.testing.assert_close(store[f"p{len(seqs) - 1}"]["representations"][2], expected.representations[-1][1], **TOL)
