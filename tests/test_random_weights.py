"""``esmfold-lite weights make-random``: a tiny ESMFold of random weights in the official format, to check an install
or a set-up; everything folded with it says so (PDB REMARK 250, the mmCIF title and remark, the JSON field, the
report's banner, summary.tsv's notes, a warning at loading), and nothing folded with real weights does."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import biotite.structure.io.pdbx as pdbx
import pytest
import torch

import esmfold_lite
from esmfold_lite.cli import main
from esmfold_lite.io.modelcif import RANDOM_WEIGHTS_REMARK
from esmfold_lite.io.structure import load_structure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "proteins.fasta"
FORMATS = ["--formats", "pdb,cif,json"]


def cli(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "esmfold_lite.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


def printed_predict_command(stdout: str, fasta: Path, outdir: Path) -> list[str]:
    """The ``esmfold-lite predict ...`` line make-random prints, with its placeholders filled in."""
    (line,) = [line.strip() for line in stdout.splitlines() if line.strip().startswith("esmfold-lite predict")]
    words = shlex.split(line)
    return [{"INPUT.fasta": str(fasta), "OUTDIR": str(outdir)}.get(word, word) for word in words[1:]]


def marked(text: str) -> bool:
    return RANDOM_WEIGHTS_REMARK in text


@pytest.mark.slow
def test_make_random_then_the_printed_predict_command_says_random_weights_everywhere(tmp_path):
    made = cli("weights", "make-random", str(tmp_path / "random"))
    outdir = tmp_path / "out"
    folded = cli(*printed_predict_command(made.stdout, EXAMPLES, outdir), *FORMATS)
    assert "RANDOM WEIGHTS" in folded.stderr  # the warning when it is loaded

    ids = [line.split("\t")[0] for line in (outdir / "summary.tsv").read_text().splitlines()[1:]]
    assert len(ids) == 3
    for name in ids:
        pdb_text = (outdir / f"{name}.pdb").read_text()
        assert pdb_text.startswith(f"REMARK 250 {RANDOM_WEIGHTS_REMARK}\n")
        assert load_structure(outdir / f"{name}.pdb").array_length() > 0  # still a valid PDB file
        block = pdbx.CIFFile.read(str(outdir / f"{name}.cif")).block
        assert block["struct"]["title"].as_item().startswith(RANDOM_WEIGHTS_REMARK)
        assert block["pdbx_database_remark"]["text"].as_item() == RANDOM_WEIGHTS_REMARK
        assert load_structure(outdir / f"{name}.cif").array_length() > 0
        confidence = json.loads((outdir / f"{name}.json").read_text())
        assert confidence["random_weights"] is True
    assert "RANDOM WEIGHTS: not a prediction" in (outdir / "summary.tsv").read_text()

    cli("report", str(outdir))
    html = (outdir / "report.html").read_text()
    assert f'<p class="random-weights banner" role="alert">{RANDOM_WEIGHTS_REMARK}: 3 of 3 proteins' in html


def test_make_random_writes_the_official_format_deterministically(tmp_path, capsys, caplog):
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main(["weights", "make-random", str(tmp_path / name), "--seed", seed]) == 0
    assert "--model " + str(tmp_path / "a" / "esmfold_3B_v1.pt") in capsys.readouterr().out
    files = ("esmfold_3B_v1.pt", "esm2_t36_3B_UR50D.pt", "esm2_t36_3B_UR50D-contact-regression.pt")
    loaded = {name: [torch.load(tmp_path / name / f, weights_only=True) for f in files] for name in "abc"}
    esmfold, lm, regression = loaded["a"]
    assert esmfold["cfg"]["model"]["esmfold_lite_random_weights"] is True
    assert not any(key.startswith("esm.") for key in esmfold["model"])
    assert all(key.startswith("encoder.") for key in lm["model"]) and set(regression["model"]) == {
        "contact_head.regression.weight", "contact_head.regression.bias"}  # fmt: skip

    def same(x: dict, y: dict) -> bool:
        x, y = x["model"], y["model"]
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    assert all(same(x, y) for x, y in zip(loaded["a"], loaded["b"], strict=True))  # --seed: the same weights
    assert not same(loaded["a"][0], loaded["c"][0])
    zero = [k for k, v in esmfold["model"].items() if v.is_floating_point() and v.numel() > 1 and not v.any()]
    assert zero == []  # every parameter randomized: no zero-initialised output layer is left

    model = esmfold_lite.load_model(tmp_path / "a" / "esmfold_3B_v1.pt")  # the LM found beside it
    assert model.random_weights and "RANDOM WEIGHTS" in caplog.text
    prediction = model.fold("MKTAYIAKQR", num_recycles=0)
    assert prediction.random_weights and prediction.select(0).random_weights
    assert marked(prediction.to_pdb()) and marked(prediction.to_mmcif())

    assert main(["weights", "convert", str(tmp_path / "a" / "esmfold_3B_v1.pt"), str(tmp_path / "own")]) == 0
    assert esmfold_lite.load_model(tmp_path / "own").random_weights  # convert keeps the mark


def test_real_weights_write_no_mark(tmp_path, official_checkpoint):
    model = esmfold_lite.load_model(official_checkpoint)
    assert model.random_weights is False
    prediction = model.fold("MKTAYIAKQR", num_recycles=0)
    assert not prediction.random_weights
    assert not marked(prediction.to_pdb()) and not marked(prediction.to_mmcif())
    assert not prediction.to_pdb().startswith("REMARK") and "pdbx_database_remark" not in prediction.to_mmcif()

    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n")
    outdir = tmp_path / "out"
    argv = ["predict", str(fasta), "-o", str(outdir), "--model", str(official_checkpoint), "--num-recycles", "0"]
    assert main([*argv, *FORMATS]) == 0
    assert "random_weights" not in json.loads((outdir / "a.json").read_text())
    assert not any(marked((outdir / f"a.{fmt}").read_text()) for fmt in ("pdb", "cif"))
    assert "RANDOM" not in (outdir / "summary.tsv").read_text()
    assert main(["report", str(outdir)]) == 0
    assert "random-weights" not in (outdir / "report.html").read_text().split("</style>")[1]
