"""ESM-1b / ESM-1v: parity with fair-esm's ProteinBertModel on randomized weights, in memory and through the official
file layout (argparse.Namespace args, fairseq key prefixes, separate contact regression); the 1,022-residue limit."""

import json
import warnings
from argparse import Namespace

import esm
import pytest
import torch
from fair_esm_files import save_fair_lm
from randomize import randomize_

import esmfold_lite
from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.cli import main
from esmfold_lite.lm.esm1 import ESM1, ESM1B_T33, ESM1Config
from esmfold_lite.weights.esm2_format import contact_regression_path
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

LAYERS, DIM, FFN, HEADS = 3, 40, 72, 5
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "AC<mask>DEFGHIK", "MLVW"]
ATOL = 1e-5


def fair_model(token_dropout: bool, emb_layer_norm_before: bool = True, max_positions: int = 64, seed: int = 0):
    args = Namespace(
        arch="roberta_large",
        layers=LAYERS,
        embed_dim=DIM,
        ffn_embed_dim=FFN,
        attention_heads=HEADS,
        max_positions=max_positions,
        emb_layer_norm_before=emb_layer_norm_before,
        token_dropout=token_dropout,
    )
    model = esm.ProteinBertModel(args, esm.Alphabet.from_architecture("ESM-1b"))
    return randomize_(model, seed=seed).eval()


def save_official(fair, path, with_regression: bool = True) -> None:
    """``fair`` laid out as the released ESM-1b/1v files: Namespace args with ``encoder_`` names, prefixed keys."""
    a = fair.args
    args = Namespace(
        arch="roberta_large",
        encoder_layers=a.layers,
        encoder_embed_dim=a.embed_dim,
        encoder_ffn_embed_dim=a.ffn_embed_dim,
        encoder_attention_heads=a.attention_heads,
        max_positions=a.max_positions,
        token_dropout=a.token_dropout,
        dropout=0.1,
        task="masked_lm",
    )
    # lm_head.weight shares the embedding's storage, as released
    save_fair_lm(path, fair.state_dict(), {"args": args}, regression="beside" if with_regression else "none")


def fair_load(path, with_regression: bool = True):
    """What fair-esm's own loader builds from the file (it zeroes the <mask> embedding row)."""
    data = torch.load(path, weights_only=False)
    regression = torch.load(contact_regression_path(path), weights_only=False) if with_regression else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Regression weights not found" for ESM-1v
        model, _ = esm.pretrained.load_model_and_alphabet_core(path.stem, data, regression)
    return model.eval()


def run(model, tokens, contacts=True) -> dict:
    with torch.no_grad():
        return model(tokens, repr_layers=range(LAYERS + 1), return_contacts=contacts)


def assert_same(ours: dict, theirs: dict, contacts: bool = True) -> None:
    torch.testing.assert_close(ours["logits"], theirs["logits"], atol=ATOL, rtol=0)
    for layer in range(LAYERS + 1):
        torch.testing.assert_close(ours["representations"][layer], theirs["representations"][layer], atol=ATOL, rtol=0)
    if contacts:
        torch.testing.assert_close(ours["contacts"], theirs["contacts"], atol=ATOL, rtol=0)


def ours_from(fair) -> ESM1:
    a = fair.args
    config = ESM1Config(LAYERS, DIM, FFN, HEADS, a.max_positions, a.emb_layer_norm_before, a.token_dropout)
    model = ESM1(config).eval()
    model.load_state_dict(fair.state_dict(), strict=True)
    return model


@pytest.mark.parametrize("token_dropout", [True, False])
@pytest.mark.parametrize("emb_layer_norm_before", [True, False])
def test_same_state_dict_same_outputs_padded_batch(token_dropout, emb_layer_norm_before):
    fair = fair_model(token_dropout, emb_layer_norm_before)
    ours = ours_from(fair)
    assert ours.lm_head.weight is ours.embed_tokens.weight
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    batch = run(ours, tokens)
    assert_same(batch, run(fair, tokens))
    for i, sequence in enumerate(SEQUENCES):  # padded batch rows equal single runs
        alone = run(ours, ESM_ALPHABET.batch_encode([sequence]))
        n = alone["logits"].shape[1]
        torch.testing.assert_close(batch["logits"][i : i + 1, :n], alone["logits"], atol=ATOL, rtol=0)
        for layer in range(LAYERS + 1):
            torch.testing.assert_close(
                batch["representations"][layer][i : i + 1, :n], alone["representations"][layer], atol=ATOL, rtol=0
            )
        torch.testing.assert_close(batch["contacts"][i : i + 1, : n - 2, : n - 2], alone["contacts"], atol=ATOL, rtol=0)


def test_official_esm1b_file_loads_unchanged_and_matches_fair_esm(tmp_path):
    fair = fair_model(token_dropout=True)
    path = tmp_path / "esm1b_t3_tiny.pt"
    save_official(fair, path)
    data = load_checkpoint(path)  # the safe loader maps the Namespace to a plain dict
    assert isinstance(data["args"], dict) and data["args"]["arch"] == "roberta_large"

    reference = fair_load(path)
    assert not reference.embed_tokens.weight[ESM_ALPHABET.mask_idx].any()  # fair-esm zeroes <mask> on load
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # regression beside the file: no warning
        ours = esmfold_lite.load_language_model(path)
    assert isinstance(ours, ESM1) and not ours.training and ours.lm_head.weight is ours.embed_tokens.weight
    assert ours.config == ESM1Config(LAYERS, DIM, FFN, HEADS, 64, emb_layer_norm_before=True, token_dropout=True)
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    assert_same(run(ours, tokens), run(reference, tokens))

    # converted to the own format: no pickle, identical tensors and outputs
    assert main(["weights", "convert", str(path), str(tmp_path / "own")]) == 0
    meta = json.loads((tmp_path / "own.json").read_text())
    assert meta["kind"] == "esm1b" and meta["config"]["ffn_embed_dim"] == FFN
    converted = esmfold_lite.load_language_model(tmp_path / "own")
    for (name, a), (_, b) in zip(ours.state_dict().items(), converted.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert_same(run(converted, tokens), run(reference, tokens))


def test_official_esm1v_file_without_regression(tmp_path):
    fair = fair_model(token_dropout=True, seed=1)
    path = tmp_path / "esm1v_t3_tiny_1.pt"
    save_official(fair, path, with_regression=False)
    reference = fair_load(path, with_regression=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ESM-1v was released without a contact regression: nothing to warn about
        ours = esmfold_lite.load_language_model(path)
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    assert_same(run(ours, tokens, contacts=False), run(reference, tokens, contacts=False), contacts=False)
    assert not ours.contact_head.regression.weight.any() and not ours.contact_head.has_regression


def test_missing_regression_of_esm1b_warns(tmp_path):
    path = tmp_path / "esm1b_no_regression.pt"
    save_official(fair_model(token_dropout=True), path, with_regression=False)
    with pytest.warns(UserWarning, match="esm1b_no_regression-contact-regression.pt"):
        esmfold_lite.load_language_model(path)


def test_length_limit_is_a_clear_error_at_1022_residues():
    assert ESM1(ESM1Config(1, 8, 16, 2)).max_residues == 1022
    with torch.device("meta"):
        assert ESM1(ESM1B_T33).max_residues == 1022
    model = randomize_(ESM1(ESM1Config(num_layers=1, embed_dim=8, ffn_embed_dim=16, attention_heads=2))).eval()
    assert model.embed("A" * 1022).representations[-1][0].shape == (1022, 8)
    with pytest.raises(ValueError, match=r"1023 residues is longer than the 1022 residues .*ESM-2"):
        model(ESM_ALPHABET.batch_encode(["A" * 1023, "MK"]))
    with pytest.raises(ValueError, match="sequence 1 has 1023 residues"):
        model.embed(["MK", "A" * 1023])


def test_fair_esm_refuses_the_same_length():
    fair = fair_model(token_dropout=False, max_positions=12)
    with pytest.raises(ValueError):
        fair(ESM_ALPHABET.batch_encode(["A" * 11]))
    fair(ESM_ALPHABET.batch_encode(["A" * 10]))  # 10 residues + <cls> + <eos> = 12 positions
    ours = ours_from(fair)
    assert ours.max_residues == 10
    with pytest.raises(ValueError, match="11 residues"):
        ours(ESM_ALPHABET.batch_encode(["A" * 11]))


def test_unsupported_esm1_files_name_the_reason(tmp_path):
    path = tmp_path / "esm1_t6_43M_UR50S.pt"
    torch.save({"args": Namespace(arch="protein_bert_base", layers=6), "model": {"x": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="original ESM-1 .*protein_bert_base"):
        esmfold_lite.load_language_model(path)
    other = tmp_path / "other.pt"
    torch.save({"args": Namespace(arch="transformer_lm"), "model": {"x": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="other.pt"):
        esmfold_lite.load_language_model(other)


def test_registry_names_load_through_the_cache(tmp_path, monkeypatch):
    from esmfold_lite.weights import registry

    assert registry.get("esm1b_t33_650M_UR50S").kind == "esm1b"
    for seed in range(1, 6):
        info = registry.get(f"esm1v_t33_650M_UR90S_{seed}")
        assert info.kind == "esm1v" and info.regression_filename is None
    cache = tmp_path / "home" / "checkpoints"
    cache.mkdir(parents=True)
    save_official(fair_model(token_dropout=True), cache / "esm1v_t33_650M_UR90S_3.pt", with_regression=False)
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = esmfold_lite.load_language_model("esm1v_t33_650M_UR90S_3")  # found in the cache, no download
    assert isinstance(model, ESM1) and model.num_layers == LAYERS


def test_family_names_placed_in_the_cache_are_listed_and_load(tmp_path, monkeypatch, capsys):
    """Files put in the cache by hand under their registry file names: `weights list` shows them cached, and the
    names load offline (ESM-1b and the MSA Transformer with the contact regression beside them, ESM-1v without)."""
    import re

    from test_msa_transformer import fair_model as fair_msa_model
    from test_msa_transformer import save_official as save_official_msa

    from esmfold_lite.lm.msa_transformer import MSATransformer
    from esmfold_lite.weights import registry

    cache = tmp_path / "home" / "checkpoints"
    cache.mkdir(parents=True)
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry, "MODEL_URL", "http://127.0.0.1:9/{}.pt")  # nothing may be downloaded
    monkeypatch.setattr(registry, "REGRESSION_URL", "http://127.0.0.1:9/{}-contact-regression.pt")
    save_official(fair_model(token_dropout=True, seed=2), cache / "esm1b_t33_650M_UR50S.pt")
    save_official(fair_model(token_dropout=True, seed=3), cache / "esm1v_t33_650M_UR90S_5.pt", with_regression=False)
    save_official_msa(fair_msa_model(seed=2), cache / "esm_msa1b_t12_100M_UR50S.pt")

    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    listed = {
        "esm1b_t33_650M_UR50S": "esm1b +~7.3 GB +yes",
        "esm1v_t33_650M_UR90S_5": "esm1v +~7.3 GB +yes",
        "esm1v_t33_650M_UR90S_1": "esm1v +~7.3 GB +no",
        "esm_msa1b_t12_100M_UR50S": "msa +~1.3 GB +yes",
    }
    for name, columns in listed.items():
        assert re.search(rf"^{name} +{columns} ", listing, re.MULTILINE), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # regression found where expected; ESM-1v has none to find
        esm1b = esmfold_lite.load_language_model("esm1b_t33_650M_UR50S")
        esm1v = esmfold_lite.load_language_model("esm1v_t33_650M_UR90S_5")
        msa = esmfold_lite.load_language_model("esm_msa1b_t12_100M_UR50S")
    assert isinstance(esm1b, ESM1) and isinstance(esm1v, ESM1) and isinstance(msa, MSATransformer)
    assert esm1b.contact_head.regression.weight.any() and not esm1v.contact_head.regression.weight.any()
    assert esm1b.embed("MKTAYIAK", contacts=True).contacts[0].shape == (8, 8)


def test_esmfold_refuses_an_esm1b_language_model(tmp_path):
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    esmfold_pt, _ = write_fair_esmfold(tiny_hf_esmfold(num_blocks=1, sm_blocks=1), tmp_path / "fair")
    esm1b_pt = tmp_path / "esm1b_t3_tiny.pt"
    save_official(fair_model(token_dropout=True), esm1b_pt)
    with pytest.raises(CheckpointError, match="ESMFold reads an ESM-2 language model.*ESM1"):
        esmfold_lite.load_model(esmfold_pt, lm=esm1b_pt)
