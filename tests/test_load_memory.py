"""Loading never holds a second copy of the weights: the peak RSS growth of ``load_model`` (then every weight read
once, as the first forward pass does) stays within 1.25x the model's parameter bytes in the requested dtype.

A mid-size ESMFold (a 12-layer × 768 ESM-2, 4 full-width trunk blocks, the full structure module: about 150 M
parameters, 0.6 GB in fp32) is written as the official fair-esm pair (LM in fp16, trunk in fp32, as the published
file sizes imply) and as a transformers folder; each load runs in a fresh subprocess so its peak is its own.
The full-size numbers are in benchmarks/README.md (``benchmarks/bench_full_size.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

pytestmark = pytest.mark.slow

GROWTH_LIMIT = 1.25  # peak RSS growth / parameter bytes

MEASURE = """
import json, sys, torch
from esmfold_lite import load_model  # the package resolves its names on first use: import the loader's modules now

def rss(field="VmRSS"):  # VmHWM: the peak (ru_maxrss would count the parent's RSS at the fork)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))

with torch.device("meta"):
    torch.nn.Embedding(2, 1, padding_idx=0)  # imports torch's meta kernels: ~70 MB once per process, any model size
before = rss()
model = load_model(sys.argv[1], dtype=sys.argv[2], lm_dtype=sys.argv[2])
with torch.no_grad():
    for p in model.parameters():
        p.float().sum()  # page every weight in, as the first forward pass does
peak = rss("VmHWM")
dtypes = sorted({str(p.dtype) for p in model.parameters()})
size = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"growth": peak - before, "parameter_bytes": size, "dtypes": dtypes}))
"""


@pytest.fixture(scope="module")
def mid_size(tmp_path_factory) -> dict[str, Path]:
    model = tiny_hf_esmfold(
        num_blocks=4, sm_blocks=8, lm_layers=12, lm_dim=768, lm_heads=12, full_width=True, lddt_head_hid_dim=128
    )
    model.esm.half()
    folder = tmp_path_factory.mktemp("mid_size")
    fair, _ = write_fair_esmfold(model, folder / "fair")
    model.save_pretrained(folder / "hf")
    return {"fair-esm pickles": fair, "transformers folder": folder / "hf"}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["fair-esm pickles", "transformers folder"])
def test_load_peak_rss_within_parameter_bytes(mid_size, fmt, dtype):
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(mid_size[fmt]), dtype], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dtypes"] == [f"torch.{dtype}"]
    assert result["parameter_bytes"] > (400e6 if dtype == "float32" else 200e6)
    ratio = result["growth"] / result["parameter_bytes"]
    assert ratio <= GROWTH_LIMIT, f"{fmt} in {dtype}: peak RSS grew by {ratio:.2f}x the parameter bytes"
