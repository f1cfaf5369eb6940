"""The embeddings API (esmfold_lite.lm.embed) and the ``esmfold-lite embed`` command."""

import json

import numpy as np
import pytest
import torch
from cli_process import assert_no_bar, run_logged
from randomize import randomize_

from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.cli import main
from esmfold_lite.lm.embed import Embeddings, embed, token_budget_batches
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.weights.esm2_format import save_esm2

TOL = dict(atol=1e-5, rtol=1e-5)
SEQUENCES = ["MKTAYIAKQRQISF", "ACDEFGHIKLMNPQRSTVWYACDEFG", "MLVW", "GG<mask>HKL", "PQRSTVWYAC"]


@pytest.fixture(scope="module")
def model() -> ESM2:
    model = ESM2(ESM2Config(num_layers=3, embed_dim=40, attention_heads=5)).eval()
    randomize_(model)
    return model


def test_shapes_and_per_residue_rows(model):
    out = model.embed(SEQUENCES, layers=(-1, 0, 2), contacts=True)
    assert isinstance(out, Embeddings) and out.sequences == SEQUENCES
    assert list(out.representations) == [-1, 0, 2]
    lengths = [len(ESM_ALPHABET.encode(s)) for s in SEQUENCES]
    with torch.no_grad():
        for i, sequence in enumerate(SEQUENCES):
            tokens = ESM_ALPHABET.batch_encode([sequence])
            full = model(tokens, repr_layers=[3, 0, 2], return_contacts=True)
            for layer, index in ((-1, 3), (0, 0), (2, 2)):
                rows = out.representations[layer][i]
                assert rows.shape == (lengths[i], 40)
                # no <cls>/<eos>: rows are positions 1..L of the token sequence
                torch.testing.assert_close(rows, full["representations"][index][0, 1:-1], **TOL)
                torch.testing.assert_close(out.cls[layer][i], full["representations"][index][0, 0], **TOL)
                torch.testing.assert_close(out.mean[layer][i], rows.mean(0), **TOL)
            assert out.contacts[i].shape == (lengths[i], lengths[i])
            torch.testing.assert_close(out.contacts[i], full["contacts"][0], **TOL)
    for layer in (-1, 0, 2):
        assert out.mean[layer].shape == out.cls[layer].shape == (len(SEQUENCES), 40)


def test_single_string_and_no_contacts(model):
    out = embed(model, "MKTAYIAK")
    assert list(out.representations) == [-1] and out.contacts is None
    assert out.representations[-1][0].shape == (8, 40) and out.mean[-1].shape == (1, 40)


@pytest.mark.parametrize("budget", [1, 30, 64, 200, 10_000])
def test_token_budget_batching_equals_one_at_a_time(model, budget):
    alone = model.embed(SEQUENCES, layers=(1, -1), contacts=True)
    batched = model.embed(SEQUENCES, layers=(1, -1), contacts=True, max_tokens_per_batch=budget)
    for layer in (1, -1):
        for a, b in zip(alone.representations[layer], batched.representations[layer], strict=True):
            torch.testing.assert_close(b, a, **TOL)
        torch.testing.assert_close(batched.mean[layer], alone.mean[layer], **TOL)
        torch.testing.assert_close(batched.cls[layer], alone.cls[layer], **TOL)
    for a, b in zip(alone.contacts, batched.contacts, strict=True):
        torch.testing.assert_close(b, a, **TOL)


def test_token_budget_batches():
    lengths = [10, 30, 5, 30, 12]
    batches = token_budget_batches(lengths, 64)
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 64
    assert batches[0] == [1, 3]  # longest first, stable
    assert token_budget_batches(lengths, None) == [[1], [3], [4], [0], [2]]
    assert token_budget_batches(lengths, 1) == [[1], [3], [4], [0], [2]]


def test_inference_mode_and_errors(model):
    with torch.inference_mode():
        out = model.embed(SEQUENCES[:2], max_tokens_per_batch=100)
    assert out.representations[-1][1].shape == (26, 40)
    with pytest.raises(ValueError, match="out of range"):
        model.embed(SEQUENCES, layers=(4,))
    with pytest.raises(ValueError, match="empty"):
        model.embed(["MK", ""])
    with pytest.raises(ValueError, match="no sequences"):
        model.embed([])
    with pytest.raises(ValueError, match=r"sequence 1: not in the vocabulary of ESM2 \(position\): 'J' at 3, '1' at 4"):
        model.embed(["MKTA", "MKJ1"])
    with pytest.raises(ValueError, match="':' at 3; they would be read as <unk>"):
        model.embed("MK:TA")
    assert model.embed(["MK-TA", "ac<mask>d"]).representations[-1][1].shape[0] == 4, "gaps and special tokens are read"
    with pytest.raises(TypeError, match="an MSA needs the MSA Transformer"):
        model.embed([["MKTA", "MKTA"]])
    with pytest.raises(TypeError, match=r"layers must be a list of layer numbers, e.g. \(-1,\)"):
        model.embed("MKTA", layers=-1)


FASTA = """>seq1 first protein
MKTAYIAKQR
QISF
>../evil/name
ACDEFGHIKLMNPQRSTVWY
>dup
MLVW
>dup
GGHKL
>DUP
PQRST
"""


@pytest.fixture()
def saved_model(model, tmp_path):
    """``model`` written in esmfold_lite's own format, as the CLI's loader reads it."""
    return str(save_esm2(model, tmp_path / "weights" / "tiny").with_suffix(".safetensors"))


def read_manifest(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "id\tfile\tlength\tstatus"
    return [line.split("\t") for line in lines[1:]]


def test_cli_writes_files_and_manifest(model, saved_model, tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(FASTA)
    out_dir = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out_dir), "--model", saved_model, "--layers", "-1", "0", "--contacts"]
    assert main(argv + ["--max-tokens-per-batch", "40", "--dtype", "float32", "--device", "cpu"]) == 0

    rows = read_manifest(out_dir / "manifest.tsv")
    assert [r[0] for r in rows] == ["seq1", "../evil/name", "dup", "dup", "DUP"]
    files = [r[1] for r in rows]
    assert files[0] == "seq1.pt" and files[2:] == ["dup.pt", "dup_2.pt", "DUP_3.pt"]
    assert files[1].startswith("_evil_name") and "/" not in files[1] and ".." not in files[1]
    assert [int(r[2]) for r in rows] == [14, 20, 4, 5, 5] and {r[3] for r in rows} == {"ok"}
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(files + ["manifest.tsv", ".esmfold-lite"])  # + lock

    sequences = ["MKTAYIAKQRQISF", "ACDEFGHIKLMNPQRSTVWY", "MLVW", "GGHKL", "PQRST"]
    expected = model.embed(sequences, layers=(-1, 0), contacts=True)
    for i, (label, filename, _, _) in enumerate(rows):
        saved = torch.load(out_dir / filename)
        assert saved["label"] == label and saved["sequence"] == sequences[i]
        assert sorted(saved["representations"]) == [0, 3]  # absolute layer numbers
        for layer, absolute in ((-1, 3), (0, 0)):
            torch.testing.assert_close(saved["representations"][absolute], expected.representations[layer][i], **TOL)
            torch.testing.assert_close(saved["mean_representations"][absolute], expected.mean[layer][i], **TOL)
            torch.testing.assert_close(saved["bos_representations"][absolute], expected.cls[layer][i], **TOL)
        torch.testing.assert_close(saved["contacts"], expected.contacts[i], **TOL)
        # each tensor was saved alone, not as a view of its batch (torch.save writes a view's whole storage)
        tensors = [saved["contacts"]] + [t for key in ("representations", "mean_representations",
                                                       "bos_representations") for t in saved[key].values()]  # fmt: skip
        assert all(t.untyped_storage().nbytes() == t.nbytes for t in tensors)


def test_cli_npz_format_and_skipped_records(model, saved_model, tmp_path, caplog):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nmktayiak\n>bad\nMK1L\n>two\nMKL:LLG\n>b\nMLVW\n")
    assert main(["embed", str(fasta), "-o", str(tmp_path), "--model", saved_model, "--format", "npz"]) == 3
    assert "skipping record 'bad'" in caplog.text and "skipping record 'two'" in caplog.text
    saved = np.load(tmp_path / "a.npz")
    assert str(saved["label"]) == "a" and str(saved["sequence"]) == "MKTAYIAK"
    layer_keys = ["bos_representations_3", "mean_representations_3", "representations_3"]
    assert sorted(saved.files) == sorted(layer_keys + ["label", "sequence"])
    expected = model.embed("MKTAYIAK")
    np.testing.assert_allclose(saved["representations_3"], expected.representations[-1][0].numpy(), atol=1e-5)
    rows = read_manifest(tmp_path / "manifest.tsv")
    assert [r[:3] for r in rows] == [["a", "a.npz", "8"], ["bad", "", "4"], ["two", "", "6"], ["b", "b.npz", "4"]]
    assert [r[3].split(":")[0] for r in rows] == ["ok", "skipped", "skipped", "ok"]
    assert "each a token of its own" in rows[1][3] and "folded" not in rows[1][3], "worded for a language model"
    assert not (tmp_path / "bad.npz").exists() and not (tmp_path / "two.npz").exists()


@pytest.mark.parametrize(
    "cli, python",
    [
        (["--layers", "-1", "0", "--contacts"], dict(layers=[-1, 0], contacts=True)),
        (["--format", "npz", "--include", "mean", "bos"], dict(format="npz", include=["mean", "bos"])),
        (["--format", "safetensors", "--logits"], dict(format="safetensors", logits=True)),
    ],
)
def test_python_embed_fasta_writes_what_the_cli_writes(saved_model, tmp_path, cli, python):
    from esmfold_lite.pipeline import embed_fasta

    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nmktayiak\n>bad\nMK1L\n>c\nMLVW\n>b\nACDEFGHIKLMNPQRSTVWY\n")
    argv = ["embed", str(fasta), "-o", str(tmp_path / "cli"), "--model", saved_model, "--max-tokens-per-batch", "30"]
    assert main([*argv, *cli]) == 3
    counts = embed_fasta(fasta, tmp_path / "python", model=saved_model, max_tokens_per_batch=30, **python)
    assert (counts.embedded, counts.residues, counts.done, counts.skipped) == (3, 32, 0, 1)
    assert counts.first_problem.startswith(f"{fasta} line 3: ")

    def files(root):  # but the lock's owner record, which names the process
        return {str(p.relative_to(root)): contents(p) for p in root.rglob("*") if p.is_file() and p.stem != "owner"}

    def contents(path):  # a shard's header as a dict: safetensors writes its metadata keys in a random order
        data = path.read_bytes()
        if path.suffix != ".safetensors":
            return data
        size = int.from_bytes(data[:8], "little")
        return json.loads(data[8 : 8 + size]), data[8 + size :]

    written = files(tmp_path / "python")
    assert "manifest.tsv" in written and written == files(tmp_path / "cli")


def test_cli_user_errors(saved_model, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n")
    out_dir = tmp_path / "out"
    assert main(["embed", str(tmp_path / "missing.fasta"), "-o", str(out_dir), "--model", saved_model]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", saved_model, "--layers", "7"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt" in capsys.readouterr().err
    assert not out_dir.exists()


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    for flag in ("--output-dir", "--model", "--layers", "--format", "--contacts", "--max-tokens-per-batch"):
        assert flag in text
    for flag in ("--device", "--dtype", "manifest.tsv", "--include", "--repr_layers", "--toks_per_batch", "--nogpu"):
        assert flag in text


def test_cli_removes_temporaries_left_by_a_killed_run(saved_model, tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stale = [out_dir / ".a.pt.0123456789ab.tmp.pt", out_dir / ".manifest.tsv.abcdef012345.tmp.tsv"]
    for path in stale:
        path.write_bytes(b"half a file")  # what atomic writes killed by SIGKILL leave
    others = [out_dir / ".a.pt.tmp", out_dir / "notes.txt"]
    for path in others:
        path.write_text("not ours")
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", saved_model]) == 0
    assert not any(path.exists() for path in stale) and all(path.exists() for path in others)
    assert (out_dir / "a.pt").is_file()


def test_cli_include_and_fair_esm_spellings(model, saved_model, tmp_path, monkeypatch, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n>b\nMLVWGG\n")
    out_dir = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out_dir), "--model", saved_model, "--format", "npz"]
    fair_esm_flags = ["--include", "mean", "bos", "--repr_layers", "0", "-1", "--toks_per_batch", "9", "--nogpu"]
    assert main(argv + fair_esm_flags) == 0
    saved = np.load(out_dir / "a.npz")
    assert sorted(saved.files) == sorted(
        ["label", "sequence", "mean_representations_0", "mean_representations_3", "bos_representations_0",
         "bos_representations_3"]
    )  # fmt: skip
    expected = model.embed(["MKTAYIAK", "MLVWGG"], layers=(0, -1), contacts=True)
    np.testing.assert_allclose(saved["mean_representations_3"], expected.mean[-1][0].numpy(), atol=1e-5)
    assert main(argv[:-2] + ["--include", "contacts", "per_tok"]) == 0  # --include contacts = --contacts
    saved = torch.load(out_dir / "b.pt")
    assert sorted(saved) == ["contacts", "label", "representations", "sequence"]
    torch.testing.assert_close(saved["contacts"], expected.contacts[1], **TOL)

    from esmfold_lite.cli import build_parser

    args = build_parser().parse_args(["embed", "x", "-o", "o", "--model", "m", "--repr_layers", "1", "2",
                                      "--toks_per_batch", "77", "--nogpu"])  # fmt: skip
    assert args.layers == [1, 2] and args.max_tokens_per_batch == 77 and args.nogpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device cuda valid: the contradiction is not
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--nogpu", "--device", "cuda"])
    assert exit_info.value.code == 2 and "--nogpu means --device cpu" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_progress_in_a_log_is_lines_not_a_bar_and_nothing_with_quiet(saved_model, tmp_path):
    """stderr a file: a progress line (done/total, rate, time left) every interval, never a bar; -q: nothing."""
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{i}\n{sequence}\n" for i, sequence in enumerate(SEQUENCES[:3])))
    argv = ["embed", str(fasta), "--model", saved_model, "--max-tokens-per-batch", "20"]
    text = run_logged([*argv, "-o", str(tmp_path / "a")], tmp_path / "a.log", interval=0)
    assert_no_bar(text)
    lines = [line for line in text.splitlines() if " embed: " in line]
    assert lines and lines[-1].startswith("INFO ") and " of 3 seq (" in lines[-1] and "seq/s" in lines[-1], text
    assert "res/s" in lines[-1]
    assert run_logged([*argv, "-o", str(tmp_path / "b"), "-q"], tmp_path / "b.log", interval=0) == ""


def test_cli_reads_a_fasta_with_a_utf8_byte_order_mark(model, saved_model, tmp_path):
    """A FASTA that an editor saved with a UTF-8 byte-order mark embeds every record, the first one too."""
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{i}\n{sequence}\n" for i, sequence in enumerate(SEQUENCES[:3])), encoding="utf-8-sig")
    assert fasta.read_bytes().startswith(b"\xef\xbb\xbf>s0")
    text = run_logged(["embed", str(fasta), "-o", str(tmp_path / "out"), "--model", saved_model], tmp_path / "log")
    assert "before the first '>' header" not in text and "skipping" not in text, text
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert [(r[0], r[1], r[3]) for r in rows] == [("s0", "s0.pt", "ok"), ("s1", "s1.pt", "ok"), ("s2", "s2.pt", "ok")]
    saved = torch.load(tmp_path / "out" / "s0.pt")
    torch.testing.assert_close(saved["mean_representations"][3], model.embed(SEQUENCES[0]).mean[-1][0], **TOL)
