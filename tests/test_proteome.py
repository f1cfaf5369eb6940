"""``fold-proteome``: the work queue and naming without Ray, then local Ray (started here once, CPU only, 2 workers)
with a tiny randomized checkpoint: equal to ``predict``, a worker killed mid-run, the driver killed and restarted."""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from biotite.structure.io import pdb
from fake_esmfold import FakeEngine

from esmfold_lite.cli import build_parser
from esmfold_lite.io.fasta import unique_ids
from esmfold_lite.pipeline import FoldingOptions, output_names, predict_fasta, ray_driver, ray_workers
from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.proteome import fold_proteome
from esmfold_lite.pipeline.work_queue import WorkQueue

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
HOSTILE = (
    b">../../escape traversal\nMKTAYIAKQR\n"
    b">dup\nMKVAAAW\n>dup\nMKVAAAY\n"
    b">bad_letters\nMKV1-J\n"
    b">empty\n\n"
    b">run\nACDEFGH\n"
    b">\xff\xfebad_utf8\nMKVA\n"
    b">half_empty_chain\nMKV:\n"
    b">unknown_residues\nMKUAXW\n"
)
HOSTILE_ERRORS = {"bad_letters", "empty", "half_empty_chain"}  # the ids of the records that must fail


def write_proteome(path: Path, count: int, seed: int = 0, hostile: bool = True) -> dict[str, str]:
    """``count`` random sequences of 8–60 residues (one complex), plus the hostile records; returns the valid ones."""
    rng = random.Random(seed)
    records = {f"prot{i}": "".join(rng.choice(AMINO_ACIDS) for _ in range(rng.randint(8, 60))) for i in range(count)}
    records["prot0"] = records["prot0"][:20] + ":" + records["prot1"][:15]
    data = "".join(f">{name} random protein\n{sequence}\n" for name, sequence in records.items()).encode()
    data += HOSTILE if hostile else b""
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return records


def read_summary(outdir: Path) -> dict[str, dict[str, str]]:
    with (outdir / "summary.tsv").open(newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}


def complete_names(outdir: Path) -> set[str]:
    """Proteins whose completion record is committed (read from the run state, as a second process may)."""
    with sqlite3.connect(f"file:{outdir / '.esmfold-lite' / 'state.sqlite'}?mode=ro", uri=True) as db:
        return {name for (name,) in db.execute("SELECT id FROM proteins WHERE status = 'ok'")}


# --- without Ray -------------------------------------------------------------------------------------------------


def test_units_are_longest_first_within_the_token_budget(tmp_path):
    queue = WorkQueue(tmp_path / "queue.sqlite")
    lengths = [30, 10, 50, 12, 100, 11, 29, 50]
    for i, n in enumerate(lengths):
        queue.add(FoldJob(i, f"p{i}", f"p{i}", "A" * n, n, n))
    queue.commit()
    units = [[job.tokens for job in unit] for unit in queue.units(max_tokens=60)]
    assert units == [[100], [50], [50], [30, 29], [12, 11, 10]]
    assert [job.name for job in next(iter(queue.units(60)))] == ["p4"]
    queue.close()
    assert not (tmp_path / "queue.sqlite").exists()


def test_names_from_the_disk_backed_set_equal_predicts(tmp_path):
    ids = ["a", "a", "A", "a_2", "run", "RUN", "../x", "x", "summary", *(["dup"] * 5)]
    queue = WorkQueue(tmp_path / "queue.sqlite")
    streamed = list(output_names(iter(ids), taken=queue.names))
    assert streamed == list(output_names(ids))
    assert streamed[:4] == unique_ids(["a", "a", "A", "a_2"]) and streamed[4] == "run_2"
    queue.close()


def test_help_explains_every_flag():
    parser = next(a for a in build_parser()._actions if a.dest == "command").choices["fold-proteome"]
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[-1] for a in options} >= {
        "--ray-address", "--workers", "--gpus-per-worker", "--cpus-per-worker", "--max-tokens-per-batch",
        "--num-recycles", "--model", "--output-dir", "--max-attempts", "--overwrite",
    }  # fmt: skip
    assert all(len(a.help) > 15 for a in options)


# --- on local Ray ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny randomized ESMFold in the official fair-esm format (its LM beside it)."""
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    path, _ = write_fair_esmfold(tiny_hf_esmfold(), tmp_path_factory.mktemp("weights"))
    return path


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """One local Ray for the module: 2 CPUs, a small object store, no dashboard. Yields its address."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


OPTIONS = dict(num_recycles=0, workers=2, cpus_per_worker=1, max_tokens_per_batch=80, progress=False)


@pytest.fixture
def count_writes(monkeypatch) -> dict[str, int]:
    """How often the driver wrote each protein."""
    writes: dict[str, int] = {}
    real = ray_driver.save_folded

    def counting(state, settings, folded):
        for item in folded:
            writes[item.job.name] = writes.get(item.job.name, 0) + 1
        return real(state, settings, folded)

    monkeypatch.setattr(ray_driver, "save_folded", counting)
    return writes


@pytest.mark.slow
def test_proteome_on_two_workers_equals_predict_and_reports_hostile_records(
    ray_cluster, checkpoint, tmp_path, count_writes
):
    fasta = tmp_path / "proteome.fasta.gz"
    records = write_proteome(fasta, 44)
    report = fold_proteome(fasta, tmp_path / "ray", model_source=checkpoint, formats=("pdb", "json", "npz"), **OPTIONS)
    predict_fasta(fasta, tmp_path / "local", model_source=checkpoint, device="cpu", formats=("pdb", "json", "npz"),
                  num_recycles=0, max_tokens_per_batch=80, progress=False)  # fmt: skip

    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    assert sorted(os.listdir(ray_out)) == sorted(os.listdir(local_out)), "the same files"
    ray_rows, local_rows = read_summary(ray_out), read_summary(local_out)
    assert list(ray_rows) == list(local_rows), "the same summary rows, in FASTA order"
    for name, row in ray_rows.items():
        other = local_rows[name]
        assert {k: row[k] for k in ("length", "status", "error", "notes", "sequence_hash")} == {
            k: other[k] for k in ("length", "status", "error", "notes", "sequence_hash")
        }  # notes too: the plan's (renames, residues folded as unknown) reach the workers through the queue
        if row["status"] == "ok":
            a, b = np.load(ray_out / f"{name}.npz"), np.load(local_out / f"{name}.npz")
            np.testing.assert_allclose(a["positions"], b["positions"], atol=1e-3)
            np.testing.assert_allclose(a["plddt"], b["plddt"], atol=1e-3)
            atoms = pdb.PDBFile.read(str(ray_out / f"{name}.pdb")).get_structure(model=1)
            local_atoms = pdb.PDBFile.read(str(local_out / f"{name}.pdb")).get_structure(model=1)
            np.testing.assert_allclose(atoms.coord, local_atoms.coord, atol=2e-3)  # PDB keeps 3 decimals
    errors = {name for name, row in ray_rows.items() if row["status"] == "error"}
    assert len(errors) == len(HOSTILE_ERRORS) and all(any(e in n for e in HOSTILE_ERRORS) for n in errors)
    assert set(count_writes) == {n for n, row in ray_rows.items() if row["status"] == "ok"} >= set(records)
    assert set(count_writes.values()) == {1}, "every protein written once"
    count_writes_before = dict(count_writes)
    assert report["status"] == "finished" and report["proteins"]["failed"] == len(errors)
    assert json.loads((ray_out / "run.json").read_text())["proteins"] == report["proteins"]
    assert len(report["workers"]) == 2 and report["worker_deaths"] == 0
    assert all(worker["proteins"] > 0 for worker in report["workers"]), "both workers folded"

    # the same command again folds nothing and starts no worker
    count_writes.clear()
    again = fold_proteome(fasta, ray_out, model_source=checkpoint, formats=("pdb", "json", "npz"), **OPTIONS)
    assert count_writes == {} and again["proteins"]["skipped_complete"] == len(count_writes_before)


@pytest.mark.slow
def test_a_second_engine_drives_fold_proteome_as_it_drives_predict(ray_cluster, tmp_path):
    import fake_esmfold
    import ray

    fasta = tmp_path / "proteome.fasta"
    valid = write_proteome(fasta, 12, seed=2)  # renamed and unknown-residue records: their notes go through the queue
    folded = len(valid) + 6  # the hostile records that fold: the traversal, dup, dup_2, run_2, bad UTF-8, unknown
    options = FoldingOptions(formats=("pdb", "json"), max_tokens_per_batch=80, progress=False)
    ray.cloudpickle.register_pickle_by_value(fake_esmfold)  # Ray's workers cannot import the tests' modules
    try:
        report = fold_proteome(fasta, tmp_path / "ray", options=options, engine=FakeEngine(), workers=2,
                               cpus_per_worker=1)  # fmt: skip
    finally:
        ray.cloudpickle.unregister_pickle_by_value(fake_esmfold)
    predict_fasta(fasta, tmp_path / "local", options=options, engine=FakeEngine())

    def protein_files(outdir: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in outdir.iterdir() if p.suffix in (".pdb", ".json") and p.is_file()}

    ray_files, local_files = protein_files(tmp_path / "ray"), protein_files(tmp_path / "local")
    assert ray_files.pop("run.json") != local_files.pop("run.json")  # its rates and counts
    assert ray_files == local_files and len(ray_files) == 2 * report["proteins"]["ok"] == 2 * folded
    assert report["settings"] == json.loads((tmp_path / "local" / "run.json").read_text())["settings"]
    assert report["settings"]["engine"] == "fake"


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing_and_writes_nothing_twice(
    ray_cluster, checkpoint, tmp_path, count_writes, monkeypatch
):
    fasta = tmp_path / "proteome.fasta"
    records = write_proteome(fasta, 30, seed=1, hostile=False)
    killed = []
    real_returned = ray_driver.Driver._returned

    def kill_a_busy_worker_after_the_first_result(self, ref, unit, worker):
        real_returned(self, ref, unit, worker)
        if not killed:
            busy = next(w for w in self.pool.workers if w.load and w.info.get("pid"))
            os.kill(busy.info["pid"], signal.SIGKILL)
            killed.append(busy.info["pid"])

    monkeypatch.setattr(ray_driver.Driver, "_returned", kill_a_busy_worker_after_the_first_result)
    options = {**OPTIONS, "max_tokens_per_batch": 40}
    report = fold_proteome(fasta, tmp_path / "out", model_source=checkpoint, **options)

    assert killed and report["worker_deaths"] == 1
    assert [w["worker"] for w in report["workers"]] != [1, 2], "the dead worker was replaced"
    summary = read_summary(tmp_path / "out")
    assert set(summary) == set(records) and all(row["status"] == "ok" for row in summary.values())
    assert count_writes == dict.fromkeys(records, 1), "every protein completes exactly once"
    assert any("worker lost" in row["notes"] for row in summary.values())


SLOW_DRIVER = """
import os, sys, time
from esmfold_lite.pipeline import ray_driver
from esmfold_lite.cli import main

write, delay = ray_driver.save_folded, float(os.environ.get("WRITE_DELAY", "0.3"))
ray_driver.save_folded = lambda *args: time.sleep(delay) or write(*args)
sys.exit(main(sys.argv[1:]))
"""


def _stop_slow_driver_midway(args: list[str], outdir: Path, log_path: Path, sig: int, complete: int) -> int:
    """Run a slowly writing driver until ``complete`` proteins are complete, send it ``sig``; its exit status."""
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, "-c", SLOW_DRIVER, *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if (outdir / ".esmfold-lite" / "state.sqlite").exists() and len(complete_names(outdir)) >= complete:
                break
            time.sleep(0.2)
        assert driver.poll() is None, log_path.read_text()
        driver.send_signal(sig)
        return driver.wait(timeout=60)


@pytest.mark.slow
def test_a_stopped_or_killed_driver_restarted_resumes_and_recomputes_nothing_complete(
    ray_cluster, checkpoint, tmp_path
):
    fasta, outdir = tmp_path / "proteome.fasta", tmp_path / "out"
    records = write_proteome(fasta, 30, seed=2)
    args = ["fold-proteome", str(fasta), "-o", str(outdir), "--model", str(checkpoint), "--ray-address", ray_cluster,
            "--workers", "2", "--cpus-per-worker", "1", "--num-recycles", "0", "--max-tokens-per-batch", "30",
            "--no-progress"]  # fmt: skip

    # SIGTERM (what Slurm sends at the time limit): a clean stop, exit status 143, the report says so
    assert _stop_slow_driver_midway(args, outdir, tmp_path / "driver1.log", signal.SIGTERM, 3) == 128 + signal.SIGTERM
    assert json.loads((outdir / "run.json").read_text())["status"] == "interrupted"
    assert "interrupted; finished proteins are kept" in (tmp_path / "driver1.log").read_text()
    stopped = complete_names(outdir)

    # SIGKILL: nothing runs on the way out
    _stop_slow_driver_midway(args, outdir, tmp_path / "driver2.log", signal.SIGKILL, len(stopped) + 3)
    done = complete_names(outdir)
    assert stopped < done and len(done) < len(records)
    stamps = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.stem in done}

    with open(tmp_path / "driver3.log", "w") as log:
        argv = [sys.executable, "-m", "esmfold_lite.cli", *args]
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=400).returncode
    output = (tmp_path / "driver3.log").read_text()
    assert rc == 3, output  # the hostile records failed; everything else is ok
    summary = read_summary(outdir)
    ok = {name for name, row in summary.items() if row["status"] == "ok"}
    assert ok >= set(records) and len(summary) - len(ok) == len(HOSTILE_ERRORS)
    assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.stem in done} == stamps
    report = json.loads((outdir / "run.json").read_text())
    assert report["proteins"]["skipped_complete"] == len(done)
    assert report["proteins"]["folded"] == len(ok) - len(done)
    assert not list(outdir.rglob(".*.tmp*")) and not (outdir / ".esmfold-lite" / "queue.sqlite").exists()


FAKE_CLI = Path(__file__).with_name("fake_esmfold.py")


def _ray_processes(driver: int, name: str) -> list:
    """The processes called ``name`` below the process ``driver``: of the Ray it started, never another Ray."""
    import psutil

    found = []
    for process in psutil.Process(driver).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            if process.name() == name:
                found.append(process)
    return found


def _kill_local_ray_midway(args: list[str], outdir: Path, tmp_path: Path, victim: str, kills: int) -> tuple[int, list]:
    """Run ``fold-proteome ARGS`` with the fake model (1 s a call, every folded sequence appended to
    ``tmp_path/folded.txt``) on the local Ray it starts itself, its log in ``tmp_path/driver.log``; ``kills`` times,
    once 3 more proteins are complete than when it was first seen, SIGKILL that Ray's process called ``victim`` (the
    raylet, or ``ray::DashboardAgent``, which the raylet fate-shares with). Returns the driver's exit status and, per
    kill, the victim's pid, the proteins complete just before it and their files' (mtime, inode)."""
    env = {**os.environ, "FAKE_ESMFOLD_DELAY": "1", "FAKE_ESMFOLD_LOG": str(tmp_path / "folded.txt")}
    log_path, kills_done, seen = tmp_path / "driver.log", [], {}  # seen: victim pid -> proteins complete then
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, str(FAKE_CLI), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 240
            while len(kills_done) < kills:
                assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()
                state = outdir / ".esmfold-lite" / "state.sqlite"
                done = complete_names(outdir) if state.exists() else set()
                killed = {pid for pid, _, _ in kills_done}
                victims = [p for p in _ray_processes(driver.pid, victim) if p.pid not in killed]  # a fresh Ray's
                for process in victims:
                    seen.setdefault(process.pid, len(done))
                if victims and len(done) >= seen[victims[0].pid] + 3:  # that Ray is up and folding
                    stamps = _file_stamps(outdir, done)
                    victims[0].kill()
                    kills_done.append((victims[0].pid, done, stamps))
                time.sleep(0.1)
            return driver.wait(timeout=300), kills_done  # bounded: a hang fails here
        finally:
            if driver.poll() is None:
                driver.kill()


def _file_stamps(outdir: Path, proteins: set[str]) -> dict[str, tuple[int, int]]:
    """(mtime, inode) of every file of these proteins: equal later only if none was rewritten or replaced."""
    return {
        f.name: (f.stat().st_mtime_ns, f.stat().st_ino) for f in outdir.iterdir() if f.is_file() and f.stem in proteins
    }


LOCAL_RAY_ARGS = ["--model", "fake", "--workers", "2", "--cpus-per-worker", "1", "--num-recycles", "0",
                  "--max-tokens-per-batch", "30", "--no-progress"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["raylet", "ray::DashboardAgent"])
def test_a_dead_local_ray_is_restarted_once_and_the_run_finishes_folding_nothing_complete_again(tmp_path, victim):
    fasta, outdir = tmp_path / "proteome.fasta", tmp_path / "out"
    records = write_proteome(fasta, 30, seed=3, hostile=False)
    args = ["fold-proteome", str(fasta), "-o", str(outdir), *LOCAL_RAY_ARGS]
    rc, [(pid, before, stamps)] = _kill_local_ray_midway(args, outdir, tmp_path, victim, kills=1)
    log = (tmp_path / "driver.log").read_text()
    assert rc == 0, log
    how = f"\\(pid {pid}\\) was killed by SIGKILL" if victim == "raylet" else r"\(pid \d+\) [^;]+"
    assert re.search(f"the local Ray is lost: its raylet {how}; starting a fresh local Ray and carrying on", log), log
    assert "every worker died" not in log

    # every protein complete and in the summary; what was complete before the kill neither folded again nor rewritten
    assert 3 <= len(before) < len(records) and complete_names(outdir) == set(records)
    summary = read_summary(outdir)
    assert set(summary) == set(records) and all(row["status"] == "ok" for row in summary.values())
    if victim == "raylet":  # dead before any worker is seen dying (the agent's death makes the raylet end them first)
        assert not any("worker lost" in row["notes"] for row in summary.values()), "the Ray's loss is no worker's fault"
    assert json.loads((outdir / "run.json").read_text())["status"] == "finished"
    folds = collections.Counter((tmp_path / "folded.txt").read_text().splitlines())
    assert set(folds) == set(records.values())
    assert all(folds[records[name]] == 1 for name in before)
    assert max(folds.values()) <= 2, "only a unit in flight when the Ray died, never recorded complete, folds again"
    assert _file_stamps(outdir, before) == stamps

    # a plain re-run folds nothing and rewrites no file
    stamps = _file_stamps(outdir, set(records))
    again = subprocess.run([sys.executable, str(FAKE_CLI), *args], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "FAKE_ESMFOLD_LOG": str(tmp_path / "folded.txt")})  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert collections.Counter((tmp_path / "folded.txt").read_text().splitlines()) == folds
    assert _file_stamps(outdir, set(records)) == stamps


@pytest.mark.slow
def test_a_local_ray_that_dies_again_after_its_restart_stops_the_run_keeping_what_is_complete(tmp_path):
    fasta, outdir = tmp_path / "proteome.fasta", tmp_path / "out"
    records = write_proteome(fasta, 30, seed=5, hostile=False)
    args = ["fold-proteome", str(fasta), "-o", str(outdir), *LOCAL_RAY_ARGS]
    rc, kills = _kill_local_ray_midway(args, outdir, tmp_path, "raylet", kills=2)
    log = (tmp_path / "driver.log").read_text()
    assert rc == 1, log
    (_, first, first_stamps), (second_pid, second, _) = kills
    assert log.count("starting a fresh local Ray and carrying on") == 1
    assert re.search(
        f"error: the local Ray is lost: its raylet \\(pid {second_pid}\\) was killed by SIGKILL; it had been restarted "
        "once already; the finished proteins are kept: run the same command again to resume", log
    ), log  # fmt: skip
    assert json.loads((outdir / "run.json").read_text())["status"] == "failed"
    assert first < second <= complete_names(outdir) < set(records)
    assert _file_stamps(outdir, first) == first_stamps


def test_a_stall_after_a_lost_node_stops_the_run_naming_the_node():
    """No Ray needed: a fake cluster whose only other node died, and a worker that cannot be scheduled."""

    class FakeRay:
        alive = True

        def nodes(self):
            return [{"NodeID": "a" * 40, "NodeManagerAddress": "10.0.0.1", "Alive": True},
                    {"NodeID": "b" * 40, "NodeManagerAddress": "10.0.0.2", "Alive": self.alive}]  # fmt: skip

    ray = FakeRay()
    pool = ray_workers.Pool.__new__(ray_workers.Pool)
    pool.workers = [ray_workers.Worker(handle=None, number=1, starting=object())]  # pending creation
    driver = ray_driver.Driver(ray, pool, None, None, None, attempts=3, stall_timeout=60)
    driver._watch(time.monotonic())
    ray.alive = False
    driver._watch(time.monotonic())  # a loss alone is not a stall
    assert driver.lost == {"b" * 40: "10.0.0.2"}
    with pytest.raises(
        ray_driver.PipelineError, match=r"no worker could be scheduled for 60 s .*bbbbbbbbbbbb at 10\.0\.0\.2"
    ):
        driver._watch(time.monotonic() + 61)
    ray.nodes = lambda: []
    with pytest.raises(ray_driver.RayLost, match="last node"):
        driver._watch(time.monotonic())


def test_a_worker_death_on_a_local_ray_whose_raylet_exited_is_the_ray_lost_and_counts_against_nothing():
    """No Ray needed: Ray's handles on the processes ``ray.init`` started say the raylet exited; a worker death seen
    then raises RayLost (the unit handed back, no death or attempt counted); on a Ray this process joined
    (``local=False``) the same death is a worker's, replaced and its unit retried."""
    from types import SimpleNamespace

    class RayError(Exception):
        pass

    processes = [("log_monitor", SimpleNamespace(pid=6, returncode=1))]
    node = SimpleNamespace(dead_processes=lambda: processes)
    constants = SimpleNamespace(PROCESS_TYPE_RAYLET="raylet", PROCESS_TYPE_GCS_SERVER="gcs_server")
    ray = SimpleNamespace(
        _private=SimpleNamespace(worker=SimpleNamespace(_global_node=node), ray_constants=constants),
        exceptions=SimpleNamespace(RayTaskError=type("RayTaskError", (RayError,), {}), RayActorError=RayError),
        kill=lambda handle, no_restart: None,
    )
    assert ray_workers.local_ray_lost(ray) is None, "a dead log monitor leaves the node working"
    processes.append(("raylet", SimpleNamespace(pid=7, returncode=-signal.SIGKILL)))
    assert ray_workers.local_ray_lost(ray) == "the local Ray is lost: its raylet (pid 7) was killed by SIGKILL"
    ray._private.worker._global_node = None  # joined, not started here
    assert ray_workers.local_ray_lost(ray) is None
    ray._private.worker._global_node = node

    for local in (True, False):
        pool = ray_workers.Pool.__new__(ray_workers.Pool)
        worker = ray_workers.Worker(handle=None, number=1)
        pool.ray, pool.workers, pool.deaths, pool.start = ray, [worker], 0, lambda: None
        driver = ray_driver.Driver(ray, pool, None, None, None, attempts=3, stall_timeout=60, local=local)
        unit = ray_driver.Unit([FoldJob(0, "p0", "p0", "MKV", 3, 3)])
        if local:
            with pytest.raises(ray_driver.RayLost, match=r"its raylet \(pid 7\) was killed by SIGKILL"):
                driver._failed(unit, worker, RayError("The actor died unexpectedly"))
            assert list(driver.retry) == [unit] and unit.attempts == 0 and pool.deaths == 0
        else:
            driver._failed(unit, worker, RayError("The actor died unexpectedly"))
            assert pool.deaths == 1 and unit.attempts == 1 and "worker lost" in unit.jobs[0].notes[0]


def test_the_summary_lists_every_protein_once_the_first_worker_is_ready():
    """A driver killed in its first minute leaves a summary.tsv (``report`` needs one): written when the model is up."""

    class Report:
        started = summaries = 0

        def start_folding(self):
            self.started += 1

        def write_summary(self):
            self.summaries += 1

    class FakeRay:
        def get(self, ref):
            return {"pid": 1, "node": "127.0.0.1", "device": "cpu", "error": ""}

    pool = ray_workers.Pool.__new__(ray_workers.Pool)
    pool.ever_ready = False
    workers = [ray_workers.Worker(handle=None, number=n, starting=object()) for n in (1, 2)]
    report = Report()
    driver = ray_driver.Driver(FakeRay(), pool, None, None, report, attempts=3, stall_timeout=60)
    for worker in workers:
        driver._started(worker, worker.starting)
    assert (report.started, report.summaries) == (1, 1)


def test_a_directory_or_a_missing_file_as_fasta_is_named_as_such(tmp_path):
    for fasta, why in ((tmp_path, "Is a directory"), (tmp_path / "missing.fasta", "No such file or directory")):
        with pytest.raises(ray_driver.PipelineError, match=f"cannot read FASTA file .*: {why}"):
            fold_proteome(fasta, tmp_path / "out", model_source="m", progress=False)
    assert not (tmp_path / "out").exists()
