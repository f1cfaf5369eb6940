"""``fold-proteome`` on a Ray cluster that loses the only node able to host its workers: the run stops after
``stall_timeout`` with exit status 1 (PipelineError), naming the lost node, ``run.json`` says failed, and the same
run on a repaired cluster folds the rest, rewriting nothing complete. A two-node cluster on this machine
(``ray.cluster_utils.Cluster``): a head without CPUs and one worker node with 2."""

from __future__ import annotations

import json
import threading
import time

import pytest
from test_proteome import complete_names, read_summary, write_proteome

from esmfold_lite.pipeline import PipelineError, proteome, ray_driver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    path, _ = write_fair_esmfold(tiny_hf_esmfold(), tmp_path_factory.mktemp("weights"))
    return path


def test_a_lost_node_stops_the_run_after_the_stall_timeout_and_the_rerun_completes(
    checkpoint, tmp_path, monkeypatch
):
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    node = cluster.add_node(num_cpus=2)
    try:
        fasta, outdir = tmp_path / "proteome.fasta", tmp_path / "out"
        records = write_proteome(fasta, 30, seed=4, hostile=False)
        write = ray_driver.save_folded
        monkeypatch.setattr(ray_driver, "save_folded", lambda *args: time.sleep(1.0) or write(*args))
        options = dict(model_source=checkpoint, num_recycles=0, workers=2, cpus_per_worker=1, max_tokens_per_batch=30,
                       progress=False, ray_address=cluster.address, stall_timeout=10)  # fmt: skip

        def remove_the_node_after_three_proteins():
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if (outdir / ".esmfold-lite" / "state.sqlite").exists() and len(complete_names(outdir)) >= 3:
                    break
                time.sleep(0.2)
            cluster.remove_node(node)

        remover = threading.Thread(target=remove_the_node_after_three_proteins)
        remover.start()
        started = time.monotonic()
        with pytest.raises(PipelineError, match=r"no worker could be scheduled for 10 s after Ray lost node\(s\)") as e:
            proteome.fold_proteome(fasta, outdir, **options)
        remover.join()
        assert time.monotonic() - started < 240
        assert node.address_info["node_ip_address"] in str(e.value) and "run the same command again" in str(e.value)
        assert json.loads((outdir / "run.json").read_text())["status"] == "failed"
        done = complete_names(outdir)
        assert 3 <= len(done) < len(records)
        stamps = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.is_file() and p.stem in done}

        cluster.add_node(num_cpus=2)  # repaired: the same run folds the rest
        monkeypatch.setattr(ray_driver, "save_folded", write)
        report = proteome.fold_proteome(fasta, outdir, **options)
        assert report["status"] == "finished" and complete_names(outdir) == set(records)
        assert all(row["status"] == "ok" for row in read_summary(outdir).values())
        assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir() if p.name in stamps} == stamps
    finally:
        cluster.shutdown()
