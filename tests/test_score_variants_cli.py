"""``esmfold-lite score-variants`` end to end on checkpoints written in the official fair-esm format."""

import csv

import pytest
import torch
from test_esm2_loading import save_official
from test_esm2_parity import fair_esm_model, ours_from

from esmfold_lite.cli import main
from esmfold_lite.lm.variants import score_variants

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
    assert "row 3: mutation 'A24C'" in caplog.text and "4 of 7 mutations could not be scored" in caplog.text
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
