"""Reports opened in headless Chromium with the network off.

1. A real ``predict`` run: a tiny randomized ESMFold written in the official fair-esm format folds two proteins, a
   two-chain complex and a record that fails. The report embeds 3Dmol.js from the npm package ``3dmol``; Chromium
   loads it from a file:// URL behind a proxy that goes nowhere, renders the WebGL views in software (SwiftShader)
   and takes a screenshot, whose pixels must show the molecules in their pLDDT colours; the DOM after the scripts
   ran must list every protein.
2. A longer report driven with playwright-core (``report_interaction.js``): 3D views exist only near the screen,
   scrolling makes and releases them, and the table sorts and filters.

Needs Debian's ``chromium`` and, from npm, ``3dmol`` and ``playwright-core`` in ``.ci/node`` (``.ci/run`` installs
them and sets ``ESMFOLD_LITE_REQUIRE_BROWSER=1``, so that CI fails instead of skipping when they are missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_esmfold import FakeFolder
from PIL import Image
from test_predict_cli import write_fasta

from esmfold_lite import predict_fasta
from esmfold_lite.cli import main
from esmfold_lite.io.structure import load_structure
from esmfold_lite.io.summary_tsv import read_summary
from esmfold_lite.viz.colors import PLDDT_BANDS, plddt_band_index
from esmfold_lite.viz.report import write_report
from esmfold_lite.viz.view import residue_plddt

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = Path(os.environ.get("ESMFOLD_LITE_NODE_MODULES", ROOT / ".ci" / "node" / "node_modules"))
THREEDMOL_JS = NODE_MODULES / "3dmol" / "build" / "3Dmol-min.js"
PLAYWRIGHT = NODE_MODULES / "playwright-core"
RECORDS = {"ubq": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
           "gb1": "MTYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE",
           "insulin": "GIVEQCCTSICSLYQLENYCN:FVNQHLCGSHLVEALYLVCGERGFFYTPKT",
           "broken": "MKT4Y"}  # fmt: skip
WINDOW = (1200, 2400)
MIN_BAND_PIXELS = 1000  # the page's legend shows each band colour on 100 pixels; a drawn molecule covers thousands


def _chromium(playwright: bool = False) -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = []
    if path is None:
        missing.append("Chromium (Debian: apt-get install chromium)")
    if not THREEDMOL_JS.is_file():
        missing.append(f"3Dmol.js at {THREEDMOL_JS} (npm install --prefix .ci/node 3dmol)")
    if playwright and not (PLAYWRIGHT.is_dir() and shutil.which("node")):
        missing.append(f"node and playwright-core at {PLAYWRIGHT} (npm install --prefix .ci/node playwright-core)")
    if missing:
        reason = "needs " + " and ".join(missing) + "; .ci/run installs both"
        if os.environ.get("ESMFOLD_LITE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run_chromium(chromium: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network: a proxy on a closed port, no background services, a fresh profile."""
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=15000", *args, url,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=True)


def band_pixels(image: np.ndarray, color: str) -> np.ndarray:
    """Mask of the pixels showing ``color`` under 3Dmol's lighting: the colour scaled by 0.25–1.1, within 30 levels."""
    target = np.array([int(color[k : k + 2], 16) for k in (1, 3, 5)], dtype=float)
    scale = image @ target / (target @ target)
    distance = np.linalg.norm(image - scale[..., None] * target, axis=-1)
    return (scale > 0.25) & (scale < 1.1) & (distance < 30)


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_network(tmp_path, official_checkpoint):
    chromium = _chromium()
    outdir = tmp_path / "out"
    fasta = write_fasta(tmp_path / "in.fasta", RECORDS)
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", str(official_checkpoint), "--device", "cpu",
            "--num-recycles", "0", "--formats", "pdb,json", "--no-progress"]  # fmt: skip
    assert main(argv) == 3  # the broken record
    assert main(["report", str(outdir), "--3dmol-js", str(THREEDMOL_JS)]) == 0
    report = outdir / "report.html"
    assert "<script src=" not in report.read_text()  # nothing to fetch
    url = report.as_uri()

    dom = run_chromium(chromium, url, tmp_path / "profile-dom", "--dump-dom").stdout
    rows = re.findall(r'<tr class="status-(\w+)">.*?<a href="#p\d+">(.*?)</a>', dom)
    assert rows == [("ok", "ubq"), ("ok", "gb1"), ("ok", "insulin"), ("error", "broken")]
    assert "not amino-acid letters" in dom
    rendered = re.findall(r'<div class="viewer" data-structure="s(\d+)" data-rendered="true">\s*<canvas', dom)
    assert rendered == ["1", "2", "3"], "a 3D view was not created"
    assert not re.search(r"class=\"placeholder\">(3D view failed|3Dmol.js did not load)", dom)

    screenshot = tmp_path / "report.png"
    run_chromium(chromium, url, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    image = np.asarray(Image.open(screenshot).convert("RGB"), dtype=float)
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    # the band most residues of the run fall in must show on screen, far beyond the legend's swatch
    counts = np.zeros(len(PLDDT_BANDS), int)
    for name in ("ubq", "gb1", "insulin"):
        _, _, plddt = residue_plddt(load_structure(outdir / f"{name}.pdb", extra_fields=("b_factor",)))
        counts += np.bincount(plddt_band_index(plddt), minlength=len(PLDDT_BANDS))
    band = PLDDT_BANDS[int(np.argmax(counts))]
    pixels = int(band_pixels(image, band.color).sum())
    assert pixels >= MIN_BAND_PIXELS, f"{band.name} ({band.color}): {pixels} pixels; are the 3D views blank?"
    if os.environ.get("ESMFOLD_LITE_SCREENSHOT"):  # keep it to look at (e.g. as a CI artifact)
        shutil.copy(screenshot, os.environ["ESMFOLD_LITE_SCREENSHOT"])


@pytest.mark.slow
def test_views_are_made_near_the_screen_and_the_table_sorts(tmp_path):
    chromium = _chromium(playwright=True)
    records = {f"p{k:02d}": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"[: 12 + k] for k in range(30)}
    records["p07"] = "MKT4"
    outdir = tmp_path / "out"
    predict_fasta(write_fasta(tmp_path / "in.fasta", records), outdir, model=FakeFolder(), progress=False)
    report = write_report(outdir, threedmol_js=THREEDMOL_JS)

    script = Path(__file__).with_name("report_interaction.js")
    argv = ["node", str(script), str(PLAYWRIGHT), chromium, report.as_uri(), "15", "29"]
    seen = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout)
    assert seen["errors"] == []
    # views exist only near the window: at load below the 30-row table, then around protein 15, then around 29
    for key, k in (("atLoad", 1), ("afterFirst", 15), ("afterSecond", 29)):
        rendered = [int(s[1:]) for s in seen[key]["rendered"]]
        assert all(abs(j - k) <= 3 for j in rendered) and (k in rendered or key == "atLoad"), (key, rendered)
        assert seen[key]["canvases"] == len(rendered)  # released views gave their canvas (WebGL context) back

    plddt = {row["id"]: float(row["mean_plddt"] or "nan") for row in read_summary(outdir / "summary.tsv")}
    ok = sorted(plddt[name] for name in records if name != "p07")
    assert [plddt[name] for name in seen["ascending"][:-1]] == ok and seen["ascending"][-1] == "p07"  # empty last
    assert [plddt[name] for name in seen["descending"][:-1]] == ok[::-1] and seen["descending"][-1] == "p07"
    assert seen["failedOnly"] == ["p07"]
