"""Every ``esmfold-lite`` message on a bad input is in CLI words: what is wrong and the fix, with flags, never Python
(``None``, ``null``, ``overwrite=True``, a traceback, an exception's class, a bare errno or opcode number).

Each case runs the command line (``cli.main``) on one input a newcomer or a hostile user gives: a missing file, a
directory as a file, an empty or odd FASTA, bad flag values, damaged checkpoints (cut short, text, a zip that is not
torch's, gzip, empty), a damaged or other-settings OUTDIR.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from pathlib import Path

import pytest
import torch
from fake_esmfold import FakeFolder, patch_load_model

from esmfold_lite.cli import main
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.weights.esm2_format import save_esm2

PYTHON_WORDS = re.compile(
    r"\bNone\b|\bnull\b|=True\b|=False\b|Traceback|\b[A-Z]\w*(Error|Exception)\b|Errno|\(-?\d+\)|"
    r"PytorchStreamReader|inline_container|miniz"
)
"""What a CLI message must not hold: Python values and keyword arguments, a traceback, an exception class, a raw errno
or a number in parentheses with nothing to say what it is, the text of torch's zip reader."""


def write_inputs(root: Path) -> None:
    """The files the cases name, under ``root``."""
    (root / "ok.fasta").write_text(">a\nMKTAYIAK\n")
    (root / "bad_letters.fasta").write_text(">good\nMKTAYIAK\n>bad\nMKJ12\n")
    (root / "empty.fasta").write_text("")
    (root / "dir.fasta").mkdir()
    (root / "cut.fasta.gz").write_bytes(gzip.compress(b">a\nMKTAYIAK\n" * 500)[:-40])
    (root / "latin1.csv").write_bytes("mutant,note\nK2A,caf\xe9\n".encode("latin-1"))
    (root / "dms.csv").write_text("mutant\nK2A\n")
    torch.save({"w": torch.zeros(64)}, root / "good.pt")
    whole = (root / "good.pt").read_bytes()
    (root / "cut.pt").write_bytes(whole[: len(whole) // 2])
    (root / "fasta_as.pt").write_text(">a\nMKTAYIAK\n")  # a FASTA given as weights: pickle reads '>' as opcode 62
    (root / "empty.pt").write_bytes(b"")
    (root / "packed.pt").write_bytes(gzip.compress(whole))
    with zipfile.ZipFile(root / "other_zip.pt", "w") as archive:
        archive.writestr("readme.txt", "not torch")
    (root / "cut_pickle.pt").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01")
    model = ESM2(ESM2Config(num_layers=1, embed_dim=8, attention_heads=2))
    save_esm2(model, root / "tiny" / "esm2")
    damaged = root / "damaged_out" / ".esmfold-lite"
    damaged.mkdir(parents=True)
    (damaged / "state.sqlite").write_bytes(b"this is not an SQLite database" * 100)


LM = "tiny/esm2.safetensors"
CASES = [
    # (id, argv with {root}-relative paths, exit status, words the message holds)
    ("missing FASTA", ["predict", "missing.fasta", "-o", "out", "--model", "fake"], 1, "No such file or directory"),
    ("FASTA is a directory", ["predict", "dir.fasta", "-o", "out", "--model", "fake"], 1, "Is a directory"),
    ("empty FASTA", ["predict", "empty.fasta", "-o", "out", "--model", "fake"], 1, "no FASTA records"),
    ("cut gzip FASTA", ["predict", "cut.fasta.gz", "-o", "out", "--model", "fake"], 1, "truncated gzip file"),
    ("rejected record", ["predict", "bad_letters.fasta", "-o", "out", "--model", "fake"], 3, "is not folded"),
    ("unknown format", ["predict", "ok.fasta", "-o", "out", "--model", "fake", "--formats", "xyz"], 2,
     "choose from pdb, cif, json"),
    ("damaged run state", ["predict", "ok.fasta", "-o", "damaged_out", "--model", "fake"], 1,
     "the overwrite option (--overwrite)"),
    ("FASTA as weights", ["predict", "ok.fasta", "-o", "out", "--model", "fasta_as.pt"], 1, "it is text (it starts"),
    ("cut zip weights", ["predict", "ok.fasta", "-o", "out", "--model", "cut.pt"], 1, "cut short"),
    ("empty weights", ["predict", "ok.fasta", "-o", "out", "--model", "empty.pt"], 1, "the file is empty"),
    ("gzip weights", ["predict", "ok.fasta", "-o", "out", "--model", "packed.pt"], 1, "gzip-compressed: unpack it"),
    ("zip not torch", ["predict", "ok.fasta", "-o", "out", "--model", "other_zip.pt"], 1, "not one torch.save wrote"),
    ("embed missing input", ["embed", "missing.fasta", "-o", "out", "--model", LM], 1, "does not exist"),
    ("embed directory input", ["embed", "dir.fasta", "-o", "out", "--model", LM], 1, "is a directory"),
    ("embed empty FASTA", ["embed", "empty.fasta", "-o", "out", "--model", LM], 1, "no FASTA records in"),
    ("embed cut pickle", ["embed", "ok.fasta", "-o", "out", "--model", "cut_pickle.pt"], 1, "a pickle that is cut"),
    ("embed rejected record", ["embed", "bad_letters.fasta", "-o", "out", "--model", LM], 3, "sequence is refused"),
    ("scores into a directory", ["score-variants", "--model", LM, "--sequence", "MKTAYIAK", "--dms-input",
     "dms.csv", "--dms-output", "dir.fasta"], 1, "--dms-output dir.fasta is a directory"),
    ("missing wild-type FASTA", ["score-variants", "--model", LM, "--fasta", "missing.fasta", "--all-singles",
     "--dms-output", "s.csv"], 1, "cannot read missing.fasta: No such file or directory"),
    ("Latin-1 DMS table", ["score-variants", "--model", LM, "--sequence", "MKTAYIAK", "--dms-input", "latin1.csv",
     "--dms-output", "s.csv"], 1, "not UTF-8 text (the first is 0xe9); save it as UTF-8"),
    ("convert FASTA as weights", ["weights", "convert", "fasta_as.pt", "converted"], 1, "it is text"),
    ("evaluate a directory", ["evaluate", "dir.fasta", "ok.fasta"], 1, "dir.fasta is a directory"),
]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_inputs(root)
    return root


@pytest.mark.parametrize(("argv", "status", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_inputs_are_told_in_cli_words(inputs, argv, status, words, capsys, caplog, monkeypatch, tmp_path):
    monkeypatch.chdir(inputs)  # paths in messages are as the user typed them
    argv = [str(tmp_path / "out") if arg == "out" else arg for arg in argv]  # a new OUTDIR for each case
    if "fake" in argv:
        patch_load_model(monkeypatch, lambda *args, **kwargs: FakeFolder())
    if status == 2:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        code = exit_info.value.code
    else:
        code = main(argv)
    told = capsys.readouterr().err + "\n".join(caplog.messages)
    assert code == status, told
    assert words in told, told
    assert not PYTHON_WORDS.search(told), told


def test_a_rejected_record_is_not_said_to_fold_as_unknown(inputs, monkeypatch, caplog, tmp_path):
    patch_load_model(monkeypatch, lambda *args, **kwargs: FakeFolder())
    out = tmp_path / "out"
    assert main(["predict", str(inputs / "bad_letters.fasta"), "-o", str(out), "--model", "fake", "-q"]) == 3
    (line,) = [message for message in caplog.messages if "'J' at 3" in message]
    assert "this sequence is not folded" in line and "(folded as unknown)" not in line
    summary = (out / "summary.tsv").read_text()
    assert "\terror\t" in summary and "this sequence is not folded" in summary


def test_other_settings_in_outdir_are_named_without_python_values(inputs, monkeypatch, capsys, tmp_path):
    patch_load_model(monkeypatch, lambda *args, **kwargs: FakeFolder())
    argv = ["predict", str(inputs / "ok.fasta"), "-o", str(tmp_path / "out"), "--model", "fake"]
    assert main(argv) == 0
    assert main([*argv, "--num-recycles", "1"]) == 1
    err = capsys.readouterr().err
    assert "(num-recycles: not set -> 1). Use the overwrite option (--overwrite)" in err, err
    assert not PYTHON_WORDS.search(err), err
