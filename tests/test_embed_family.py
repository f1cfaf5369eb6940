"""`embed` (API and CLI) with every family member: ESM-2, ESM-1b/1v, MSA Transformer; logits, contacts, contact PNG."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from randomize import randomize_

from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.cli import main
from esmfold_lite.lm.esm1 import ESM1, ESM1Config
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.msa_transformer import MSA_ALPHABET, MSATransformer, MSATransformerConfig
from esmfold_lite.weights.own_format import save_own_format

TOL = dict(atol=1e-5, rtol=1e-5)
SEQUENCES = ["MKTAYIAK", "ACDEFG<mask>IK", "MLVW"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def esm1b() -> ESM1:
    return randomize_(ESM1(ESM1Config(2, 16, 32, 4, max_positions=12, token_dropout=True))).eval()


@pytest.fixture(scope="module")
def msa_model() -> MSATransformer:
    return randomize_(MSATransformer(MSATransformerConfig(2, 16, 32, 4, max_positions=40, msa_position_dim=16))).eval()


def save(model, kind: str, path) -> str:
    return str(save_own_format(path, kind, asdict(model.config), model.state_dict()))


@pytest.mark.parametrize("family", ["esm2", "esm1b"])
def test_logits_and_contacts_of_single_sequence_models(family, esm1b):
    model = esm1b if family == "esm1b" else randomize_(ESM2(ESM2Config(2, 16, 4))).eval()
    out = model.embed(SEQUENCES, layers=(-1,), contacts=True, logits=True, max_tokens_per_batch=40)
    with torch.no_grad():
        for i, sequence in enumerate(SEQUENCES):
            full = model(ESM_ALPHABET.batch_encode([sequence]), return_contacts=True)
            torch.testing.assert_close(out.logits[i], full["logits"][0, 1:-1], **TOL)
            torch.testing.assert_close(out.contacts[i], full["contacts"][0], **TOL)
    assert out.logits[2].shape == (4, 33) and out.msas is None
    assert model.embed("MK").logits is None


def test_logits_need_an_lm_head():
    model = ESM2(ESM2Config(1, 8, 2, lm_head=False)).eval()
    with pytest.raises(ValueError, match="no masked-LM head"):
        model.embed("MKT", logits=True)


def test_msa_embed_equals_the_forward_query_row(msa_model):
    rows = ["MKTAYIAK", "MKT-YIAK", "MRTAYV-K"]
    out = msa_model.embed([rows], layers=(1, -1), contacts=True, logits=True)
    with torch.no_grad():
        full = msa_model(MSA_ALPHABET.batch_encode(rows)[None], repr_layers=[1, 2], return_contacts=True)
    torch.testing.assert_close(out.representations[1][0], full["representations"][1][0, 0, 1:], **TOL)
    torch.testing.assert_close(out.representations[-1][0], full["representations"][2][0, 0, 1:], **TOL)
    torch.testing.assert_close(out.logits[0], full["logits"][0, 0, 1:], **TOL)
    torch.testing.assert_close(out.contacts[0], full["contacts"][0], **TOL)


def read_manifest(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "id\tfile\tlength\tstatus"
    return [line.split("\t") for line in lines[1:]]


def test_cli_esm1b_logits_contact_png_and_length_limit(esm1b, tmp_path):
    model_path = save(esm1b, "esm1b", tmp_path / "esm1b_tiny")
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">ok\nMKTAYIAK\n>long\nMKTAYIAKQRQ\n>short\nMLVW\n")
    out_dir = tmp_path / "out"
    argv = ["embed", str(fasta), "-o", str(out_dir), "--model", model_path, "--logits", "--contacts-png"]
    assert main(argv) == 3  # one record longer than the 10 residues of this model: skipped, the others done
    rows = read_manifest(out_dir / "manifest.tsv")
    assert [r[:3] for r in rows] == [["ok", "ok.pt", "8"], ["long", "", "11"], ["short", "short.pt", "4"]]
    assert rows[1][3] == "skipped: 11 residues, more than the maximum length 10" and rows[0][3] == "ok"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["manifest.tsv", "ok.pt", "short.pt", "ok.contacts.png", "short.contacts.png", ".esmfold-lite"]
    )
    assert (out_dir / "ok.contacts.png").read_bytes().startswith(PNG_MAGIC)
    saved = torch.load(out_dir / "ok.pt")
    assert "contacts" not in saved  # drawn, not saved, without --contacts
    expected = esm1b.embed("MKTAYIAK", contacts=True, logits=True)
    torch.testing.assert_close(saved["logits"], expected.logits[0], **TOL)
    torch.testing.assert_close(saved["representations"][2], expected.representations[-1][0], **TOL)


def test_cli_msa_transformer(msa_model, tmp_path):
    model_path = save(msa_model, "msa", tmp_path / "msa_tiny")
    good = tmp_path / "good.a3m"
    good.write_text(">query\nMKTAYIAK\n>hit1\nMKTaaAYIAK\n>hit2\nMRTAYV-K\n>hit3\nMKTAYIAR\n")
    bad = tmp_path / "bad.a3m"
    bad.write_text(">query2\nMKTAYIAK\n>hit\nMKTAY\n")
    out_dir = tmp_path / "out"
    argv = ["embed", str(good), str(bad), "-o", str(out_dir), "--model", model_path, "--contacts", "--logits"]
    assert main(argv + ["--max-depth", "3", "--format", "npz", "--layers", "0", "-1"]) == 3
    rows = read_manifest(out_dir / "manifest.tsv")
    assert rows[0] == ["query", "query.npz", "8", "ok"]
    assert rows[1][:3] == ["bad", "", "0"] and "row 'hit' (line 3) has 5 alignment columns" in rows[1][3]
    saved = np.load(out_dir / "query.npz")
    assert int(saved["msa_depth"]) == 3 and str(saved["sequence"]) == "MKTAYIAK"
    expected = msa_model.embed(str(good), layers=(0, -1), contacts=True, logits=True, max_depth=3)
    np.testing.assert_allclose(saved["representations_2"], expected.representations[-1][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["representations_0"], expected.representations[0][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["contacts"], expected.contacts[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["logits"], expected.logits[0].numpy(), atol=1e-5)


def deep_msa(path, depth: int, width: int = 6, seed: int = 0):
    """An a3m of ``depth`` random rows (the query first); returns the rows."""
    g = torch.Generator().manual_seed(seed)
    letters = "ACDEFGHIKLMNPQRSTVWY-"
    rows = ["".join(letters[i] for i in torch.randint(0, 20, (width,), generator=g))]
    rows += ["".join(letters[i] for i in torch.randint(0, 21, (width,), generator=g)) for _ in range(depth - 1)]
    path.write_text("".join(f">r{i}\n{row}\n" for i, row in enumerate(rows)))
    return rows


def test_cli_max_depth_and_selection_are_used_as_given(msa_model, tmp_path):
    """--max-depth above 128 or 0 (all rows) and --selection first reach the model unchanged, not re-cut."""
    from esmfold_lite import open_embeddings

    model_path = save(msa_model, "msa", tmp_path / "msa_tiny")
    rows = deep_msa(tmp_path / "deep.a3m", 140)
    base = ["embed", str(tmp_path / "deep.a3m"), "--model", model_path, "--layers", "-1"]
    assert main([*base, "-o", str(tmp_path / "all"), "--max-depth", "0"]) == 0
    saved = torch.load(tmp_path / "all" / "r0.pt")
    assert int(saved["msa_depth"]) == 140
    expected = msa_model.embed([rows], max_depth=None)
    torch.testing.assert_close(saved["representations"][2], expected.representations[-1][0], **TOL)

    argv = [*base, "-o", str(tmp_path / "first"), "--max-depth", "133", "--selection", "first"]
    assert main(argv + ["--format", "safetensors"]) == 0
    store = open_embeddings(tmp_path / "first")
    assert int(store["r0"]["msa_depth"]) == 133
    assert (store.settings["max_depth"], store.settings["selection"]) == (133, "first")
    expected = msa_model.embed([rows[:133]], max_depth=None)
    torch.testing.assert_close(store["r0"]["representations"][2], expected.representations[-1][0], **TOL)


def test_cli_msa_too_wide_or_too_deep_is_skipped_and_the_others_embedded(msa_model, tmp_path, caplog):
    model_path = save(msa_model, "msa", tmp_path / "msa_tiny")  # at most 39 columns, 1024 rows
    deep_msa(tmp_path / "good.a3m", 3, seed=1)
    deep_msa(tmp_path / "long.a3m", 2, width=60, seed=2)
    deep_msa(tmp_path / "deep.a3m", 1025, width=3, seed=3)
    (tmp_path / "deep.a3m").write_text((tmp_path / "deep.a3m").read_text().replace(">r0\n", ">deep\n", 1))
    inputs = [str(tmp_path / name) for name in ("long.a3m", "good.a3m", "deep.a3m")]
    for fmt in ("pt", "safetensors"):
        out_dir = tmp_path / fmt
        argv = ["embed", *inputs, "-o", str(out_dir), "--model", model_path, "--max-depth", "0", "--format", fmt]
        assert main(argv) == 3
        rows = read_manifest(out_dir / "manifest.tsv")
        assert [r[:3] for r in rows] == [["r0", "", "60"], ["r0", rows[1][1], "6"], ["deep", "", "3"]]
        assert rows[0][3] == "skipped: 60 columns, more than the 39 MSATransformer can embed; split it into " \
            "windows of at most that length"  # fmt: skip
        assert rows[1][3] == "ok" and rows[1][1] in ("r0_2.pt", "shards/shard-000000.safetensors")
        assert rows[2][3].startswith("skipped: 1025 rows, more than the 1024 MSATransformer takes")
    assert "skipping record 'r0'" in caplog.text


def test_cli_refuses_contacts_without_regression_and_logits_without_head(tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n")
    esm1v = randomize_(ESM1(ESM1Config(1, 8, 16, 2)))
    with torch.no_grad():
        esm1v.contact_head.regression.weight.zero_()
        esm1v.contact_head.regression.bias.zero_()
    esm1v_path = save(esm1v, "esm1b", tmp_path / "esm1v_like")
    out_dir = tmp_path / "out"
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", esm1v_path, "--contacts"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no contact regression weights" in err and "drop --contacts." in err
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", esm1v_path, "--contacts-png"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "drop --contacts-png." in err  # the flag given, not another
    assert "convert again" in err and "beside the checkpoint" not in err  # a converted file: convert it again
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", esm1v_path, "--include", "contacts"]) == 1
    assert "drop --include contacts." in capsys.readouterr().err
    headless = randomize_(ESM2(ESM2Config(1, 8, 2, lm_head=False)))
    headless_path = save(headless, "esm2", tmp_path / "headless")
    assert main(["embed", str(fasta), "-o", str(out_dir), "--model", headless_path, "--logits"]) == 1
    assert "without its masked-LM head" in capsys.readouterr().err
    assert not out_dir.exists()


def test_contact_map_png_renders():
    from esmfold_lite.viz.plots import contact_map_png

    png = contact_map_png(torch.rand(7, 7), "x")
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert contact_map_png(np.eye(3), "eye").startswith(PNG_MAGIC)


def official_checkpoint(family: str, folder):
    """A randomized fair-esm model of ``family`` written in its released layout, and fair-esm's model of that file
    (built by fair-esm's own loader, regression included)."""
    import esm
    import test_esm1_parity
    import test_esm2_loading
    import test_esm2_parity
    import test_msa_transformer

    if family == "esm2":  # fair-esm's loader picks the ESM-2 format by the name's "esm2" prefix
        path = folder / "esm2_tiny.pt"
        test_esm2_loading.save_official(test_esm2_parity.fair_esm_model((2, 32, 4), seed=5), path)
    elif family == "esm1b":
        path = folder / "esm1b_tiny.pt"
        test_esm1_parity.save_official(test_esm1_parity.fair_model(token_dropout=True, seed=5), path)
    else:
        path = folder / "esm_msa1b_tiny.pt"
        test_msa_transformer.save_official(test_msa_transformer.fair_model(seed=5), path)
    raw = torch.load(path, weights_only=False)
    regression = torch.load(path.with_name(f"{path.stem}-contact-regression.pt"), weights_only=False)
    reference, alphabet = esm.pretrained.load_model_and_alphabet_core(path.stem, raw, regression)
    return path, reference.eval(), alphabet


@pytest.mark.parametrize("family", ["esm2", "esm1b", "msa"])
def test_cli_official_files_logits_contacts_and_png_equal_fair_esm(family, tmp_path):
    """`embed --logits --contacts --contacts-png` on each family's official .pt equals fair-esm on the same file."""
    path, reference, alphabet = official_checkpoint(family, tmp_path)
    if family == "msa":
        msa = ["MKTAYIAKQRQISF", "MKT-YIAKQRQLSF", "MRTAYV-KQRQISW"]
        inputs = [tmp_path / "query.a3m"]
        inputs[0].write_text("".join(f">{'query' if i == 0 else f'hit{i}'}\n{row}\n" for i, row in enumerate(msa)))
        batches = {"query": [[(str(i), row) for i, row in enumerate(msa)]]}
    else:
        records = {"first": "MKTAYIAKQRQISF", "second": "ACDEFGHIK"}
        inputs = [tmp_path / "in.fasta"]
        inputs[0].write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
        batches = {name: [(name, sequence)] for name, sequence in records.items()}
    out_dir = tmp_path / "out"
    argv = ["embed", *map(str, inputs), "-o", str(out_dir), "--model", str(path), "--layers", "0", "-1"]
    assert main(argv + ["--logits", "--contacts", "--contacts-png"]) == 0

    last = reference.num_layers if family != "msa" else len(reference.layers)
    for name, batch in batches.items():
        _, _, tokens = alphabet.get_batch_converter()(batch)
        with torch.no_grad():
            full = reference(tokens, repr_layers=[0, last], return_contacts=True)
        query = (lambda x: x[0, 0, 1:]) if family == "msa" else (lambda x: x[0, 1:-1])  # residues of the query
        saved = torch.load(out_dir / f"{name}.pt")
        assert sorted(saved["representations"]) == [0, last]
        for layer in (0, last):
            torch.testing.assert_close(saved["representations"][layer], query(full["representations"][layer]), **TOL)
        torch.testing.assert_close(saved["logits"], query(full["logits"]), **TOL)
        torch.testing.assert_close(saved["contacts"], full["contacts"][0], **TOL)
        assert (out_dir / f"{name}.contacts.png").read_bytes().startswith(PNG_MAGIC)
