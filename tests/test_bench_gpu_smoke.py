"""benchmarks/bench_gpu.py runs on a GPU only when a session is lent one, with minutes of device time to spend: its
smoke mode (a tiny model, on the CPU) runs here, so the script does not rot between those runs."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_smoke_runs_side_by_side_on_the_cpu(tmp_path):
    command = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--lengths", "16", "--dtypes", "float32",
               "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_tiny.json").read_text())
    assert [(c["impl"], c["length"], c["dtype"]) for c in results["cases"]] == [
        ("transformers", 16, "float32"),
        ("esmfold_lite", 16, "float32"),
    ]
    assert not any("error" in c for c in results["cases"])
    assert results["cases"][1]["ca_vs_transformers_same_dtype"] < 1e-3  # the same weights, read by both
    assert "| float32 | 16 | esmfold_lite |" in done.stdout
