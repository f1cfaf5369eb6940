"""``FoldingOptions``: made and checked once (each bad value named with its flag, in CLI words), built alike by the
command line and by the keyword arguments of both drivers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fake_esmfold import FakeFolder
from test_cli_words import PYTHON_WORDS

from esmfold_lite.cli import build_parser
from esmfold_lite.commands.predict import folding_options
from esmfold_lite.pipeline import FORMATS, FoldingOptions, predict_fasta
from esmfold_lite.pipeline.proteome import fold_proteome

CHOICES = "choose from " + ", ".join(FORMATS)
BAD = [
    # (option, bad value, the message)
    ("formats", ("pdb", "xyz"), f"formats (--formats): unknown format xyz; {CHOICES}"),
    ("formats", (), f"formats (--formats): no format given; {CHOICES}"),
    ("num_recycles", -1, "num_recycles (--num-recycles) must be a whole number, 0 or more, got -1"),
    ("num_recycles", 1.5, "num_recycles (--num-recycles) must be a whole number, 0 or more, got 1.5"),
    ("num_recycles", True, "num_recycles (--num-recycles) must be a whole number, 0 or more, got True"),
    ("chunk_size", 0, "chunk_size (--chunk-size) must be auto or a positive whole number, got 0"),
    ("chunk_size", "big", "chunk_size (--chunk-size) must be auto or a positive whole number, got 'big'"),
    ("max_tokens_per_batch", 0, "max_tokens_per_batch (--max-tokens-per-batch) must be a positive whole number, got 0"),
    ("max_length", -5, "max_length (--max-length) must be a positive whole number, got -5"),
]  # fmt: skip


@pytest.mark.parametrize(("option", "value", "message"), BAD, ids=[f"{o}={v!r}" for o, v, _ in BAD])
def test_each_bad_value_is_named_with_its_flag(option, value, message):
    with pytest.raises(ValueError) as raised:
        FoldingOptions(**{option: value})
    assert str(raised.value) == message
    if value is not True:  # a Python value only Python can give
        assert not PYTHON_WORDS.search(str(raised.value)), raised.value


def test_options_are_one_frozen_value_and_of_applies_checked_changes():
    base = FoldingOptions(model_source="m", formats=["pdb", "cif"], chunk_size="auto")
    assert base.formats == ("pdb", "cif") and hash(base) == hash(FoldingOptions.of(base))
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.num_recycles = 1
    changed = FoldingOptions.of(base, num_recycles=1, max_length=None)
    assert changed == dataclasses.replace(base, num_recycles=1) and base.num_recycles is None
    assert FoldingOptions.of(None, num_recycles=2) == FoldingOptions(num_recycles=2)
    with pytest.raises(ValueError, match="--num-recycles"):
        FoldingOptions.of(base, num_recycles=-1)
    with pytest.raises(TypeError, match="recycles"):
        FoldingOptions.of(base, recycles=1)


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["predict", "fold-proteome"])
def test_the_command_line_builds_the_options_from_its_flags(command):
    args = parse(command, "in.fasta", "-o", "out", "--model", "esmfold_v1")
    assert folding_options(args) == FoldingOptions(model_source="esmfold_v1", dtype="auto", chunk_size="auto")
    args = parse(
        command, "in.fasta", "-o", "out", "--model", "m.pt", "--lm", "lm.pt", "--formats", "mmcif,PDB,cif",
        "--num-recycles", "0", "--chunk-size", "64", "--max-tokens-per-batch", "99", "--max-length", "500",
        "--dtype", "bf16", "--lm-dtype", "fp16", "--cpu-offload", "--cpu-fallback", "--overwrite", "--no-progress",
    )  # fmt: skip
    assert folding_options(args) == FoldingOptions(
        model_source="m.pt", lm="lm.pt", dtype="bfloat16", lm_dtype="float16", cpu_offload=True,
        formats=("cif", "pdb"), num_recycles=0, chunk_size=64, max_tokens_per_batch=99, max_length=500,
        cpu_fallback=True, overwrite=True, progress=False,
    )  # fmt: skip


def test_the_drivers_take_options_and_keyword_changes_to_them(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">p\nMKTAYIAK\n")
    options = FoldingOptions(formats=("cif",), num_recycles=2, progress=False)
    model = FakeFolder()
    (result,) = predict_fasta(fasta, tmp_path / "out", options=options, model=model, formats=("pdb",))
    assert result.status == "ok" and model.calls[0]["num_recycles"] == 2
    assert sorted(path.name for path in (tmp_path / "out").glob("p.*")) == ["p.pdb"], "the keyword wins"


def test_bad_options_stop_both_drivers_before_anything_is_written(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">p\nMKTAYIAK\n")
    out = tmp_path / "out"
    for drive in (predict_fasta, fold_proteome):
        with pytest.raises(ValueError, match=r"max_tokens_per_batch \(--max-tokens-per-batch\)"):
            drive(fasta, out, model_source="m", max_tokens_per_batch=0)
        with pytest.raises(ValueError, match=r"model_source \(--model\)"):
            drive(fasta, out, formats=("pdb",))
    assert not Path(out).exists()
