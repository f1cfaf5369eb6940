"""``esmfold-lite score-variants`` end to end on checkpoints written in the official fair-esm format."""

import csv

import pytest
import torch
from cli_process import assert_no_bar, run_logged
from test_esm2_loading import hf_config, save_official
from test_esm2_parity import fair_esm_model, ours_from
from transformers import EsmModel

from esmfold_lite.cli import main
from esmfold_lite.lm.load import LANGUAGE_MODELS, on_meta
from esmfold_lite.lm.variants import score_variants
from esmfold_lite.weights.own_format import save_own_format

WILD_TYPE = "HPETLVKVKDAEDQLGARVG"  # numbered from 24, as fair-esm's BLAT_ECOLX example
SIZE = (2, 32, 4)
# fair-esm's example CSVs start with pandas' unnamed index column and a byte-order mark
DMS = "\ufeff,mutant,fitness\n0,H24C,0.5\n1,P25L:E26D,-1.2\n2,A24C,0.1\n3,H44C,0.0\n4,oops,1\n5,,2\n6,G43W,0.3\n"
GOOD = {0: "H24C", 1: "P25L:E26D", 6: "G43W"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two randomized ESM-2 models saved as official fair-esm .pt files, and the same models in memory."""
    folder = tmp_path_factory.mktemp("weights")
    paths, models = [], []
    for seed in (0, 1):
        fair = fair_esm_model(SIZE, seed=seed)
        path = folder / f"esm_seed{seed}.pt"
        save_official(fair, path)
        paths.append(str(path))
        models.append(ours_from(fair))
    return paths, models


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_dms_csv_with_bad_rows(checkpoints, tmp_path, caplog):
    paths, models = checkpoints
    dms = tmp_path / "dms.csv"
    dms.write_text(DMS, encoding="utf-8")
    out = tmp_path / "results" / "scores.csv"
    argv = ["score-variants", "--model", *paths, "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    argv += ["--mutation-col", "mutant", "--dms-output", str(out), "--offset-idx", "24"]
    assert main(argv + ["--scoring-strategy", "masked-marginals", "--max-tokens-per-batch", "60"]) == 3

    table = read_csv(out)
    assert table[0] == ["", "mutant", "fitness", *paths, "ensemble_mean", "error"]
    rows = table[1:]
    assert [row[:3] for row in rows] == [row.split(",") for row in DMS.lstrip("\ufeff").splitlines()[1:]]
    expected = [score_variants(m, WILD_TYPE, list(GOOD.values()), offset_idx=24) for m in models]
    for k, i in enumerate(GOOD):
        got = [float(rows[i][3]), float(rows[i][4]), float(rows[i][5])]
        want = [expected[0][k], expected[1][k], (expected[0][k] + expected[1][k]) / 2]
        assert got == pytest.approx(want, abs=1e-5)
        assert rows[i][6] == ""
    for i, reason in ((2, "has H at position 24, not A"), (3, "position 44 is outside"), (4, "not a substitution")):
        assert rows[i][3:6] == ["", "", ""]
        assert rows[i][6].startswith(f"mutation {rows[i][1]!r}: ") and reason in rows[i][6]
    assert rows[5][6].startswith("mutation '': empty")
    assert "line 4: mutation 'A24C'" in caplog.text and "4 of 7 mutations could not be scored" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv"]  # no temporary files left


@pytest.mark.parametrize("strategy", ["wt-marginals", "mutant-marginals", "pseudo-ppl"])
def test_strategies_and_fair_esm_flag_names(checkpoints, tmp_path, strategy):
    """fair-esm's predict.py command line (--model-location, TSV aside) carries over; all rows good -> 0."""
    paths, models = checkpoints
    dms = tmp_path / "dms.tsv"
    dms.write_text("variant\tscore\nP25L:E26D\t1\nH24C\t2\n")
    out = tmp_path / "scores.tsv"
    argv = ["score-variants", "--model-location", paths[1], "--sequence", WILD_TYPE.lower(), "--dms-input", str(dms)]
    argv += ["--mutation-col", "variant", "--dms-output", str(out), "--offset-idx", "24"]
    assert main(argv + ["--scoring-strategy", strategy]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["variant", "score", paths[1], "ensemble_mean", "error"]
    expected = score_variants(models[1], WILD_TYPE, ["P25L:E26D", "H24C"], strategy=strategy, offset_idx=24)
    for line, want in zip(lines[1:], expected, strict=True):
        fields = line.split("\t")
        assert float(fields[2]) == pytest.approx(want, abs=1e-5) and fields[3] == fields[2] and fields[4] == ""


def test_all_singles_from_fasta(checkpoints, tmp_path):
    paths, models = checkpoints
    fasta = tmp_path / "wt.fasta"
    fasta.write_text(f">blat\n{WILD_TYPE[:10]}\n{WILD_TYPE[10:]}\n")
    out = tmp_path / "singles.csv"
    argv = ["score-variants", "--model", *paths, "--fasta", str(fasta), "--all-singles", "--dms-output", str(out)]
    assert main(argv + ["--scoring-strategy", "wt-marginals"]) == 0

    table = read_csv(out)
    assert table[0] == ["mutant", "position", "wt", "mt", *paths, "ensemble_mean"]
    rows = table[1:]
    assert len(rows) == 19 * len(WILD_TYPE)
    assert rows[0][:4] == ["H1A", "1", "H", "A"] and rows[-1][:4] == ["G20Y", "20", "G", "Y"]
    assert all(row[2] != row[3] for row in rows)
    mutants = [row[0] for row in rows]
    expected = torch.tensor([score_variants(m, WILD_TYPE, mutants, strategy="wt-marginals") for m in models]).double()
    got = torch.tensor([[float(x) for x in row[4:]] for row in rows], dtype=torch.float64)
    torch.testing.assert_close(got[:, :2], expected.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[:, 2], expected.mean(0), atol=1e-5, rtol=1e-5)
    png = out.with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_nothing_scorable_exits_1_and_still_reports(checkpoints, tmp_path, capsys):
    paths, _ = checkpoints
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant\nX1A\nH1\n")
    out = tmp_path / "scores.csv"
    argv = ["score-variants", "--model", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    assert main(argv + ["--dms-output", str(out)]) == 1
    rows = read_csv(out)[1:]
    assert [row[1:3] for row in rows] == [["", ""], ["", ""]]
    assert "the wild type has H at position 1, not X" in rows[0][3] and "not a substitution" in rows[1][3]


def test_user_errors_exit_1(checkpoints, tmp_path, capsys):
    paths, _ = checkpoints
    dms = tmp_path / "dms.csv"
    dms.write_text("mutation\nH1C\n")
    out = tmp_path / "out" / "scores.csv"
    base = ["score-variants", "--dms-output", str(out)]
    cases = [
        (["--model", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(dms)], "no column 'mutant'"),
        (["--model", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(tmp_path / "no.csv")], "no.csv"),
        (["--model", paths[0], "--sequence", "HP1E", "--dms-input", str(dms)], "--sequence: wild-type sequence"),
        (["--model", str(tmp_path / "missing.pt"), "--sequence", WILD_TYPE, "--all-singles"], "missing.pt"),
        (["--model", paths[0], paths[0], "--sequence", WILD_TYPE, "--all-singles"], "given twice"),
    ]
    two_records = tmp_path / "two.fasta"
    two_records.write_text(">a\nMK\n>b\nMK\n")
    cases.append((["--model", paths[0], "--fasta", str(two_records), "--all-singles"], "holds 2 FASTA records"))
    for argv, message in cases:
        assert main(base + argv) == 1, argv
        assert message in capsys.readouterr().err, argv
    assert not out.exists()


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["score-variants", "--help"])
    text = capsys.readouterr().out
    flags = ["--model", "--model-location", "--sequence", "--fasta", "--dms-input", "--all-singles", "--mutation-col"]
    flags += ["--dms-output", "--scoring-strategy", "--offset-idx", "--max-tokens-per-batch", "--device", "--dtype"]
    for flag in flags:
        assert flag in text
    for word in ("masked-marginals", "pseudo-ppl", "ensemble_mean", "exit status"):
        assert word in text


ESM1_CONFIG = {"num_layers": 1, "embed_dim": 8, "ffn_embed_dim": 16, "attention_heads": 2, "max_positions": 12}


def own_format_header(path, kind: str, config: dict) -> str:
    """A tiny esmfold_lite checkpoint of ``kind`` with uninitialised tensors: the pre-check reads its json and its
    safetensors header only."""
    model_class, config_class = LANGUAGE_MODELS[kind]
    model = on_meta(lambda: model_class(config_class(**config))).to_empty(device="cpu")
    save_own_format(path, kind, config, model.state_dict())
    return str(path)


def test_every_model_is_checked_before_any_is_scored(checkpoints, tmp_path, capsys, monkeypatch):
    """A bad later model of an ensemble fails before the first is loaded, naming it and that nothing was scored."""
    import esmfold_lite.lm.load

    paths, _ = checkpoints
    not_a_model = tmp_path / "notes.pt"
    torch.save({"hello": torch.zeros(1)}, not_a_model)
    esmfold = tmp_path / "esmfold.pt"
    torch.save({"cfg": {"model": {"trunk": {"num_blocks": 1}}}, "model": {"trunk.x": torch.zeros(1)}}, esmfold)
    bad = {
        str(tmp_path / "missing.pt"): "missing.pt is neither an existing file",
        str(not_a_model): "is not a fair-esm language model",
        str(esmfold): "is an ESMFold checkpoint",
        own_format_header(tmp_path / "msa", "msa", {**ESM1_CONFIG, "msa_position_dim": None}): "reads MSAs",
        own_format_header(tmp_path / "esm1v", "esm1b", ESM1_CONFIG): "more than the 10 residues",
        "esm_msa1b_t12_100M_UR50S": "is an MSA Transformer",  # refused by its registry kind, not downloaded
        "esmfold_v1": "is an ESMFold checkpoint",
    }
    headless = tmp_path / "esm_model_folder"  # transformers EsmModel.save_pretrained: no lm_head.* tensors
    EsmModel(hf_config(), add_pooling_layer=False).save_pretrained(headless)
    bad[str(headless)] = "has no masked-LM head"
    loaded = []
    monkeypatch.setattr(esmfold_lite.lm.load, "load_language_model", lambda *a, **k: loaded.append(a))
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "empty_cache"))
    for source, message in bad.items():
        argv = ["score-variants", "--model", paths[0], source, "--sequence", WILD_TYPE, "--all-singles"]
        assert main(argv + ["--dms-output", str(tmp_path / "out.csv")]) == 1, source
        err = capsys.readouterr().err
        assert source in err and message in err and "nothing was scored" in err, (source, err)
    assert loaded == [] and not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "empty_cache").exists() or not any((tmp_path / "empty_cache").rglob("*.pt"))


def test_header_only_csv_says_it_holds_no_mutations(checkpoints, tmp_path, capsys):
    paths, _ = checkpoints
    dms = tmp_path / "oh.csv"
    dms.write_text("mutant,fitness\n\n")
    out = tmp_path / "out.csv"
    argv = ["score-variants", "--model", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    assert main(argv + ["--dms-output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "holds no mutations" in err and "error' column" not in err
    assert not out.exists()


def test_warnings_give_the_file_line_and_extra_fields_are_kept(checkpoints, tmp_path, caplog):
    paths, models = checkpoints
    dms = tmp_path / "dms.csv"
    dms.write_text('mutant,note\n\nH1C,"two\nlines"\n\nH1,x\nP2L,1,extra,more\nE3D\n')
    out = tmp_path / "out.csv"
    argv = ["score-variants", "--model", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    assert main(argv + ["--dms-output", str(out)]) == 3
    assert "line 6: mutation 'H1'" in caplog.text  # the header is line 1; blank lines and the quoted newline count
    assert "line 7 has 4 fields, more than the 2 column names" in caplog.text
    table = read_csv(out)
    assert table[0] == ["mutant", "note", "", "", paths[0], "ensemble_mean", "error"]
    assert table[1][:4] == ["H1C", "two\nlines", "", ""]
    assert table[3][:4] == ["P2L", "1", "extra", "more"]
    assert table[4][:4] == ["E3D", "", "", ""]
    expected = score_variants(models[0], WILD_TYPE, ["H1C", "P2L", "E3D"])
    got = [float(table[i][4]) for i in (1, 3, 4)]
    assert got == pytest.approx(expected, abs=1e-5)
    assert table[2][4] == "" and "not a substitution" in table[2][6]


def test_nogpu_is_fair_esms_flag_for_device_cpu(checkpoints, tmp_path, monkeypatch, capsys):
    import esmfold_lite.lm.load

    paths, _ = checkpoints
    real_load = esmfold_lite.lm.load.load_language_model
    devices = []

    def load(source, device=None, dtype=None):
        devices.append(device)
        return real_load(source, device=device, dtype=dtype)

    monkeypatch.setattr(esmfold_lite.lm.load, "load_language_model", load)
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant\nH1C\n")
    out = tmp_path / "out.csv"
    argv = ["score-variants", "--model-location", paths[0], "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    assert main(argv + ["--dms-output", str(out), "--nogpu"]) == 0
    assert devices == ["cpu"]
    assert main(argv + ["--dms-output", str(out), "--nogpu", "--device", "cpu"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device cuda valid: the contradiction is not
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--dms-output", str(out), "--nogpu", "--device", "cuda"])
    assert exit_info.value.code == 2 and "--nogpu means --device cpu" in capsys.readouterr().err


@pytest.mark.slow
def test_progress_in_a_log_is_lines_not_a_bar_and_nothing_with_quiet(checkpoints, tmp_path):
    """stderr a file: a progress line (done/total, rate, time left) every interval, never a bar; -q: nothing."""
    paths, _ = checkpoints
    argv = ["score-variants", "--model", paths[0], "--sequence", WILD_TYPE, "--offset-idx", "24",
            "--scoring-strategy", "pseudo-ppl", "--max-tokens-per-batch", "44"]  # fmt: skip
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant\nH24C\nP25L:E26D\n")
    argv += ["--dms-input", str(dms)]
    text = run_logged([*argv, "--dms-output", str(tmp_path / "a.csv")], tmp_path / "a.log", interval=0)
    assert_no_bar(text)
    lines = [line for line in text.splitlines() if "esm_seed0.pt: " in line]
    assert len(lines) > 1 and all(line.startswith("INFO ") and " seq (" in line and "seq/s" in line for line in lines)
    assert "about " in lines[0] and " left" in lines[0], lines
    quiet = [*argv, "--dms-output", str(tmp_path / "b.csv"), "-q"]
    assert run_logged(quiet, tmp_path / "b.log", interval=0) == ""


def test_utf16_fasta_and_dms_table_score_as_their_utf8_copies(checkpoints, tmp_path):
    """--fasta in UTF-16 without a byte-order mark and --dms-input in UTF-16 with one are decoded: the scores are
    those of the UTF-8 files."""
    paths, _ = checkpoints
    tables = {}
    for encoding in ("utf-8", "utf-16"):
        fasta, dms = tmp_path / f"wt-{encoding}.fasta", tmp_path / f"dms-{encoding}.csv"
        fasta.write_bytes(f">blat\n{WILD_TYPE}\n".encode("utf-16-le" if encoding == "utf-16" else encoding))
        dms.write_text(DMS.lstrip("\ufeff"), encoding=encoding)
        out = tmp_path / f"scores-{encoding}.csv"
        argv = ["score-variants", "--model", paths[0], "--fasta", str(fasta), "--dms-input", str(dms)]
        assert main(argv + ["--offset-idx", "24", "--dms-output", str(out)]) == 3  # DMS has bad rows
        tables[encoding] = read_csv(out)
    assert tables["utf-16"] == tables["utf-8"] and len(tables["utf-8"]) == 8
    assert tables["utf-8"][1][3] != "", "H24C was scored"
