"""Variant scoring with ESM-1v loaded from official-format files (Namespace args, fairseq prefixes, no contact
regression): every strategy equals a direct computation with fair-esm's ProteinBertModel as fair-esm loads the same
file; a two-seed ensemble is the mean of its members; the CLI on those files and on registry names in the cache; the
1,022-residue limit."""

import csv

import pytest
import torch
from test_esm1_parity import fair_load, fair_model, save_official
from test_variants import MUTATIONS, WILD_TYPE, direct_score

import esmfold_lite
from esmfold_lite.cli import main
from esmfold_lite.lm.esm1 import ESM1
from esmfold_lite.lm.variants import STRATEGIES, score_variants

SEEDS = (1, 2)  # like esm1v_t33_650M_UR90S_1 and _2: one architecture, different training seeds
TOL = dict(atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two randomized tiny ESM-1v files in the official layout: paths, our models, fair-esm's models of the files."""
    folder = tmp_path_factory.mktemp("esm1v")
    paths, ours, fair = [], [], []
    for seed in SEEDS:
        path = folder / f"esm1v_t3_tiny_UR90S_{seed}.pt"
        save_official(fair_model(token_dropout=True, seed=seed), path, with_regression=False)
        paths.append(path)
        ours.append(esmfold_lite.load_language_model(path))
        fair.append(fair_load(path, with_regression=False))  # fair-esm's own loader (zeroes the <mask> row)
    assert all(isinstance(model, ESM1) for model in ours)
    assert not any(hasattr(model, "alphabet") for model in fair)  # scored below straight from its logits
    return paths, ours, fair


@pytest.fixture(scope="module")
def expected(checkpoints):
    """fair-esm's direct per-term scores: {strategy: (members, mutations) tensor}."""
    _, _, fair = checkpoints
    return {
        strategy: torch.tensor([[direct_score(f, strategy, WILD_TYPE, m) for m in MUTATIONS] for f in fair])
        for strategy in STRATEGIES
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_equals_fair_esm_esm1v(checkpoints, expected, strategy):
    _, ours, _ = checkpoints
    for member, model in enumerate(ours):
        got = score_variants(model, WILD_TYPE, MUTATIONS, strategy=strategy, max_tokens_per_batch=50)
        torch.testing.assert_close(torch.tensor(got), expected[strategy][member], **TOL)
    # the two seeds really differ, so the ensemble test below is not trivially true
    assert not torch.allclose(expected[strategy][0], expected[strategy][1], atol=1e-2)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ensemble_of_two_seeds_is_the_mean(checkpoints, expected, strategy):
    _, ours, _ = checkpoints
    ensemble = score_variants(ours, WILD_TYPE, MUTATIONS, strategy=strategy)
    torch.testing.assert_close(torch.tensor(ensemble), expected[strategy].mean(0), **TOL)
    members = torch.tensor([score_variants(m, WILD_TYPE, MUTATIONS, strategy=strategy) for m in ours])
    torch.testing.assert_close(torch.tensor(ensemble), members.mean(0), atol=1e-6, rtol=1e-6)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_cli_masked_marginals_ensemble_of_official_files(checkpoints, expected, tmp_path):
    paths, ours, _ = checkpoints
    dms = tmp_path / "dms.csv"
    dms.write_text("mutant,fitness\n" + "".join(f"{m},{i}\n" for i, m in enumerate(MUTATIONS)))
    out = tmp_path / "scores.csv"
    argv = ["score-variants", "--model", *map(str, paths), "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    argv += ["--mutation-col", "mutant", "--dms-output", str(out), "--scoring-strategy", "masked-marginals"]
    assert main(argv) == 0

    table = read_csv(out)
    assert table[0] == ["mutant", "fitness", *map(str, paths), "ensemble_mean", "error"]
    rows = table[1:]
    assert [row[0] for row in rows] == MUTATIONS and all(row[-1] == "" for row in rows)
    got = torch.tensor([[float(x) for x in row[2:5]] for row in rows], dtype=torch.float64)
    api = [score_variants(m, WILD_TYPE, MUTATIONS, strategy="masked-marginals") for m in ours]
    torch.testing.assert_close(got[:, :2], torch.tensor(api, dtype=torch.float64).T, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[:, 2], torch.tensor(score_variants(ours, WILD_TYPE, MUTATIONS)).double(),
                               atol=1e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(got.T.float(), torch.cat([expected["masked-marginals"],
                               expected["masked-marginals"].mean(0, keepdim=True)]), **TOL)  # fmt: skip


def test_cli_registry_names_from_the_cache(checkpoints, tmp_path, monkeypatch):
    """The README's command: ESM-1v registry names, files placed in the cache by hand (no download)."""
    paths, ours, _ = checkpoints
    cache = tmp_path / "home" / "checkpoints"
    cache.mkdir(parents=True)
    names = [f"esm1v_t33_650M_UR90S_{seed}" for seed in SEEDS]
    for name, path in zip(names, paths, strict=True):
        (cache / f"{name}.pt").write_bytes(path.read_bytes())
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    dms = tmp_path / "dms.tsv"
    dms.write_text("variant\nK2L:T3G\nF14W\n")
    out = tmp_path / "scores.tsv"
    argv = ["score-variants", "--model", *names, "--sequence", WILD_TYPE, "--dms-input", str(dms)]
    argv += ["--mutation-col", "variant", "--dms-output", str(out), "--scoring-strategy", "wt-marginals"]
    assert main(argv) == 0
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0] == ["variant", *names, "ensemble_mean", "error"]
    api = [score_variants(m, WILD_TYPE, ["K2L:T3G", "F14W"], strategy="wt-marginals") for m in ours]
    for k, line in enumerate(lines[1:]):
        assert [float(x) for x in line[1:4]] == pytest.approx([api[0][k], api[1][k], (api[0][k] + api[1][k]) / 2])


def test_wild_type_longer_than_1022_residues_is_a_clear_error(tmp_path, capsys):
    """The released size of the learned positions (1,024 tokens): 1,022 residues score, 1,023 do not."""
    path = tmp_path / "esm1v_t3_1024_UR90S_1.pt"
    save_official(fair_model(token_dropout=True, max_positions=1024, seed=3), path, with_regression=False)
    model = esmfold_lite.load_language_model(path)
    assert model.max_residues == 1022
    assert len(score_variants(model, "A" * 1022, ["A1022G"], strategy="wt-marginals")) == 1
    for strategy in STRATEGIES:
        with pytest.raises(ValueError, match="the wild type has 1023 residues, more than the 1022 residues"):
            score_variants(model, "A" * 1023, ["A1G"], strategy=strategy)

    dms = tmp_path / "dms.csv"
    dms.write_text("mutant\nA1G\nA1023C\n")
    out = tmp_path / "out" / "scores.csv"
    argv = ["score-variants", "--model", str(path), "--sequence", "A" * 1023, "--dms-input", str(dms)]
    assert main(argv + ["--dms-output", str(out), "--scoring-strategy", "masked-marginals"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: the wild type has 1023 residues, more than the 1022 residues" in err
    assert "window" in err and "--offset-idx" in err
    assert not out.exists()  # no partial CSV


def test_msa_transformer_is_refused_by_name():
    from test_msa_transformer import fair_model as fair_msa_model
    from test_msa_transformer import ours_from as msa_from

    with pytest.raises(ValueError, match="MSATransformer reads MSAs, not single sequences"):
        score_variants(msa_from(fair_msa_model()), WILD_TYPE, ["M1A"])
