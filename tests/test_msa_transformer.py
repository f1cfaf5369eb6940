"""MSA Transformer: parity with fair-esm's MSATransformer on randomized weights, in memory and through the official
file layout (Namespace args, fairseq prefixes, row/column attention names swapped); limits; the query-row embed API."""

import warnings
from argparse import Namespace

import esm
import pytest
import torch
from fair_esm_files import save_fair_lm
from randomize import randomize_

import esmfold_lite
from esmfold_lite.cli import main
from esmfold_lite.lm.msa_transformer import MSA_ALPHABET, MSATransformer, MSATransformerConfig
from esmfold_lite.weights.esm1_format import swap_axial_attention_names
from esmfold_lite.weights.esm2_format import contact_regression_path
from esmfold_lite.weights.safe_pickle import load_checkpoint

LAYERS, DIM, FFN, HEADS, MAX_POSITIONS = 2, 32, 48, 4, 40
ATOL = 1e-5
MSA_A = ["MKTAYIAKQRQISF", "MKT-YIAKQRQLSF", "MRTAYV-KQRQISW", "-KTAYIAKERQIS-"]
MSA_B = ["ACDEFGHIK", "ACD-FGHVK", "SCDEFGH-K"]
MSA_C = ["MLVWKTA", "MLV-KTA", "ILVWRTA", "MLAWKT-"]  # as deep as MSA_A: a batch padded in columns only


def fair_model(seed: int = 0, embed_positions_msa: bool = True, max_tokens_per_msa: int = 2**14):
    args = Namespace(
        layers=LAYERS,
        embed_dim=DIM,
        ffn_embed_dim=FFN,
        attention_heads=HEADS,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_tokens_per_msa=max_tokens_per_msa,
        max_tokens=max_tokens_per_msa,  # fair-esm evaluates getattr(args, "max_tokens_per_msa", args.max_tokens)
        max_positions=MAX_POSITIONS,
        embed_positions_msa=embed_positions_msa,
    )
    model = esm.MSATransformer(args, esm.Alphabet.from_architecture("msa_transformer"))
    return randomize_(model, seed=seed).eval()


def config_of(fair) -> MSATransformerConfig:
    position_dim = None if fair.msa_position_embedding is None else DIM
    return MSATransformerConfig(LAYERS, DIM, FFN, HEADS, MAX_POSITIONS, position_dim, fair.args.max_tokens_per_msa)


def ours_from(fair, **overrides) -> MSATransformer:
    config = config_of(fair)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = MSATransformer(config).eval()
    model.load_state_dict(fair.state_dict(), strict=True)
    return model


def fair_tokens(*msas) -> torch.Tensor:
    converter = esm.Alphabet.from_architecture("msa_transformer").get_batch_converter()
    return converter([[(str(i), row) for i, row in enumerate(msa)] for msa in msas])[2]


def run(model, tokens) -> dict:
    with torch.no_grad():
        return model(tokens, repr_layers=range(LAYERS + 1), return_contacts=True)


def assert_same(ours: dict, theirs: dict) -> None:
    torch.testing.assert_close(ours["logits"], theirs["logits"], atol=ATOL, rtol=0)
    for layer in range(LAYERS + 1):
        torch.testing.assert_close(ours["representations"][layer], theirs["representations"][layer], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["row_attentions"], theirs["row_attentions"], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["col_attentions"], theirs["col_attentions"], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["contacts"], theirs["contacts"], atol=ATOL, rtol=0)


def save_official(fair, path, with_regression: bool = True) -> None:
    """``fair`` laid out as the released ESM-MSA-1b file: Namespace args with ``encoder_`` names, prefixed keys, and
    row attention stored as ``column_self_attention`` (and the reverse)."""
    a = fair.args
    args = Namespace(
        arch="msa_transformer",
        encoder_layers=a.layers,
        encoder_embed_dim=a.embed_dim,
        encoder_ffn_embed_dim=a.ffn_embed_dim,
        encoder_attention_heads=a.attention_heads,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        max_tokens=a.max_tokens_per_msa,  # fairseq's batch budget; fair-esm falls back on it without max_tokens_per_msa
        max_positions=a.max_positions,
        embed_positions_msa=a.embed_positions_msa,
    )
    state = {swap_axial_attention_names(key): value for key, value in fair.state_dict().items()}
    save_fair_lm(path, state, {"args": args}, regression="beside" if with_regression else "none")


def test_tokens_equal_fair_esm_batch_converter():
    assert torch.equal(MSA_ALPHABET.batch_encode(MSA_A)[None], fair_tokens(MSA_A))
    assert MSA_ALPHABET.batch_encode(MSA_A).shape == (4, 15)  # <cls> + 14 columns, no <eos>


@pytest.mark.parametrize("embed_positions_msa", [True, False])
def test_same_state_dict_same_outputs_on_a_padded_batch(embed_positions_msa):
    fair = fair_model(embed_positions_msa=embed_positions_msa)
    ours = ours_from(fair)
    assert ours.lm_head.weight is ours.embed_tokens.weight
    tokens = fair_tokens(MSA_A, MSA_B)  # padded in rows and columns
    assert tokens.eq(MSA_ALPHABET.padding_idx).any()
    assert_same(run(ours, tokens), run(fair, tokens))


def test_column_chunks_do_not_change_results():
    fair = fair_model(seed=2)
    tokens = fair_tokens(MSA_A, MSA_B)
    whole, chunked = ours_from(fair), ours_from(fair, max_tokens_per_msa=5)  # one column per chunk
    for layer in chunked.layers:
        layer.column_self_attention.layer.max_tokens_per_msa = 5
    assert_same(run(chunked, tokens), run(whole, tokens))


def test_padding_columns_equals_single_runs():
    ours = ours_from(fair_model(seed=3))
    batch = run(ours, fair_tokens(MSA_A, MSA_C))
    for i, msa in enumerate((MSA_A, MSA_C)):
        alone = run(ours, fair_tokens(msa))
        width = alone["logits"].shape[2]
        torch.testing.assert_close(batch["logits"][i : i + 1, :, :width], alone["logits"], atol=ATOL, rtol=0)
        for layer in range(LAYERS + 1):
            torch.testing.assert_close(
                batch["representations"][layer][i : i + 1, :, :width],
                alone["representations"][layer],
                atol=ATOL,
                rtol=0,
            )


def test_official_file_with_swapped_attention_names_matches_fair_esm(tmp_path):
    fair = fair_model(seed=1)
    path = tmp_path / "esm_msa1b_t2_tiny.pt"
    save_official(fair, path)
    data = load_checkpoint(path)
    assert isinstance(data["args"], dict) and data["args"]["arch"] == "msa_transformer"
    assert "encoder.sentence_encoder.layers.0.column_self_attention.layer.q_proj.weight" in data["model"]

    raw = torch.load(path, weights_only=False)
    regression = torch.load(contact_regression_path(path), weights_only=False)
    reference, _ = esm.pretrained.load_model_and_alphabet_core(path.stem, raw, regression)
    reference.eval()
    for key, value in fair.state_dict().items():  # fair-esm swaps the names back on load: the file is right
        assert torch.equal(reference.state_dict()[key], value), key

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = esmfold_lite.load_language_model(path)
    assert isinstance(ours, MSATransformer) and not ours.training
    assert ours.config == config_of(fair)
    tokens = fair_tokens(MSA_A, MSA_B)
    assert_same(run(ours, tokens), run(reference, tokens))

    assert main(["weights", "convert", str(path), str(tmp_path / "own")]) == 0  # pickle-free copy, same outputs
    converted = esmfold_lite.load_language_model(tmp_path / "own")
    assert isinstance(converted, MSATransformer) and converted.config == ours.config
    assert_same(run(converted, tokens), run(reference, tokens))


def test_embed_gives_the_query_row(tmp_path):
    ours = ours_from(fair_model(seed=4))
    a3m = tmp_path / "query.a3m"
    a3m.write_text(">query\nMKTAYIAKQRQISF\n>hit1\nMKTaaAYIAKQRQLSF\n>hit2\nMRTAYV-KQRQISW\n")
    out = ours.embed([a3m, ["ACDEFGHIK", "ACD-FGHVK"]], layers=(0, -1), contacts=True, logits=True)
    assert out.sequences == ["MKTAYIAKQRQISF", "ACDEFGHIK"]
    assert [msa.rows[1] for msa in out.msas] == ["MKTAYIAKQRQLSF", "ACD-FGHVK"]  # insertion "aa" removed
    direct = run(ours, fair_tokens(["MKTAYIAKQRQISF", "MKTAYIAKQRQLSF", "MRTAYV-KQRQISW"]))
    for layer, index in ((0, 0), (-1, LAYERS)):
        torch.testing.assert_close(out.representations[layer][0], direct["representations"][index][0, 0, 1:])
        torch.testing.assert_close(out.cls[layer][0], direct["representations"][index][0, 0, 0])
    torch.testing.assert_close(out.logits[0], direct["logits"][0, 0, 1:])
    torch.testing.assert_close(out.contacts[0], direct["contacts"][0])
    assert out.contacts[1].shape == (9, 9) and out.logits[1].shape == (9, 33)


def test_limits_are_clear_errors():
    model = MSATransformer(MSATransformerConfig(1, 8, 16, 2, max_positions=12, msa_position_dim=8)).eval()
    assert model.max_residues == 11 and model.max_rows == 1024
    model.embed([["A" * 11]])
    with pytest.raises(ValueError, match="MSA 1 .* 12 columns, more than the 11"):
        model.embed([["A" * 3], ["A" * 12]])
    with pytest.raises(ValueError, match="1025 rows is deeper than the 1024"):
        model(MSA_ALPHABET.batch_encode(["AC"] * 1025)[None])
    with pytest.raises(ValueError, match="not an existing file"):
        model.embed(["ACDE", "AC-E"])  # rows of one MSA must be wrapped in a list
    with pytest.raises(ValueError, match=r"\(B, R, C\)"):
        model(MSA_ALPHABET.batch_encode(["AC"]))
    assert MSATransformer(MSATransformerConfig()).max_residues == 1023  # the released model: 1,024 positions


def test_depth_limit_applies_in_embed():
    model = ours_from(fair_model(seed=5))
    rows = ["MKTAYIAKQRQISF"] + [f"MKTAYIAKQRQI{a}{b}" for a in "SLV" for b in "FW"]
    out = model.embed([rows], max_depth=3)
    assert out.msas[0].depth == 3 and out.msas[0].rows[0] == rows[0]
    assert model.embed([rows], max_depth=None).msas[0].depth == len(rows)
    first = model.embed([rows], max_depth=3, selection="first").msas[0]
    assert first.rows == tuple(rows[:3])
