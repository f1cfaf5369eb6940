"""ESM2 equals fair-esm's ESM2 and transformers' EsmModel / EsmForMaskedLM on randomised tiny models (fp32, CPU)."""

import esm
import pytest
import torch
from randomize import randomize_
from transformers import EsmConfig, EsmForMaskedLM, EsmModel

from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.weights.esm2_format import esm2_to_hf_state_dict

TOL = dict(atol=1e-5, rtol=1e-5)
# (num_layers, embed_dim, attention_heads): odd head counts and widths that are no power of two
SIZES = [(2, 30, 3), (3, 40, 5), (4, 32, 4)]
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "AC<mask>DEFG<mask>HIK", "MLVW", "<mask>KLPQR<mask><mask>STVWYA"]


def fair_esm_model(size, seed=0) -> esm.model.esm2.ESM2:
    num_layers, embed_dim, heads = size
    model = esm.model.esm2.ESM2(num_layers, embed_dim, heads, esm.Alphabet.from_architecture("ESM-1b"), True)
    randomize_(model, seed)
    return model.eval()


def ours_from(fair: esm.model.esm2.ESM2) -> ESM2:
    model = ESM2(ESM2Config(fair.num_layers, fair.embed_dim, fair.attention_heads, token_dropout=True))
    state = {k: v for k, v in fair.state_dict().items() if not k.endswith("rot_emb.inv_freq")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def transformers_config(fair: esm.model.esm2.ESM2) -> EsmConfig:
    return EsmConfig(
        vocab_size=len(ESM_ALPHABET),
        hidden_size=fair.embed_dim,
        num_hidden_layers=fair.num_layers,
        num_attention_heads=fair.attention_heads,
        intermediate_size=4 * fair.embed_dim,
        position_embedding_type="rotary",
        token_dropout=True,
        pad_token_id=ESM_ALPHABET.padding_idx,
        mask_token_id=ESM_ALPHABET.mask_idx,
        layer_norm_eps=1e-5,
        emb_layer_norm_before=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        attn_implementation="eager",
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sequences", [SEQUENCES, SEQUENCES[1:2], SEQUENCES[:1]], ids=["padded", "masked", "plain"])
def test_matches_fair_esm(size, sequences):
    fair = fair_esm_model(size)
    ours = ours_from(fair)
    tokens = ESM_ALPHABET.batch_encode(sequences)
    layers = list(range(fair.num_layers + 1))
    with torch.no_grad():
        expected = fair(tokens, repr_layers=layers, return_contacts=True)
        got = ours(tokens, repr_layers=layers, return_contacts=True)
    torch.testing.assert_close(got["logits"], expected["logits"], **TOL)
    assert sorted(got["representations"]) == layers
    for layer in layers:
        torch.testing.assert_close(got["representations"][layer], expected["representations"][layer], **TOL)
    torch.testing.assert_close(got["attentions"], expected["attentions"], **TOL)
    torch.testing.assert_close(got["contacts"], expected["contacts"], **TOL)


def test_state_dict_keys_equal_fair_esm():
    fair = fair_esm_model(SIZES[0])
    ours = ESM2(ESM2Config(*SIZES[0]))
    fair_keys = {k for k in fair.state_dict() if not k.endswith("rot_emb.inv_freq")}
    assert set(ours.state_dict()) == fair_keys
    assert ours.lm_head.weight is ours.embed_tokens.weight


@pytest.mark.parametrize("size", SIZES[:2])
def test_matches_transformers(size):
    fair = fair_esm_model(size, seed=1)
    ours = ours_from(fair)
    config = transformers_config(fair)
    base = EsmModel(config, add_pooling_layer=False).eval()
    masked_lm = EsmForMaskedLM(config).eval()
    state = ours.state_dict()  # = fair-esm's without rot_emb.inv_freq
    encoder_state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    for model, prefix, weights in ((base, "", encoder_state), (masked_lm, "esm.", state)):
        result = model.load_state_dict(esm2_to_hf_state_dict(weights, prefix), strict=False)
        assert result.missing_keys == [f"{prefix}rotary_embeddings.inv_freq"] and not result.unexpected_keys
    assert masked_lm.lm_head.decoder.weight is masked_lm.esm.embeddings.word_embeddings.weight

    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    attention_mask = tokens.ne(ESM_ALPHABET.padding_idx).long()
    n = fair.num_layers
    with torch.no_grad():
        got = ours(tokens, repr_layers=range(n + 1), need_head_weights=True)
        hidden = base(tokens, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
        logits = masked_lm(tokens, attention_mask=attention_mask).logits
    # transformers' hidden_states: embeddings, then each layer's output before the final LayerNorm
    for layer in range(n):
        torch.testing.assert_close(got["representations"][layer], hidden.hidden_states[layer], **TOL)
    torch.testing.assert_close(got["representations"][n], hidden.last_hidden_state, **TOL)
    keep = attention_mask.float()
    pair_keep = (keep[:, :, None] * keep[:, None, :])[:, None]
    for layer in range(n):
        torch.testing.assert_close(got["attentions"][:, layer], hidden.attentions[layer] * pair_keep, **TOL)
    torch.testing.assert_close(got["logits"], logits, **TOL)


@pytest.mark.parametrize("size", SIZES)
def test_padded_batch_equals_single_runs(size):
    ours = ours_from(fair_esm_model(size, seed=2))
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    with torch.no_grad():
        batched = ours(tokens, repr_layers=[0, 1, -1], return_contacts=True)
        for i, sequence in enumerate(SEQUENCES):
            single = ours(ESM_ALPHABET.batch_encode([sequence]), repr_layers=[0, 1, -1], return_contacts=True)
            t = single["logits"].shape[1]
            torch.testing.assert_close(batched["logits"][i : i + 1, :t], single["logits"], **TOL)
            for layer in (0, 1, -1):
                torch.testing.assert_close(
                    batched["representations"][layer][i : i + 1, :t], single["representations"][layer], **TOL
                )
            torch.testing.assert_close(batched["contacts"][i : i + 1, : t - 2, : t - 2], single["contacts"], **TOL)


@pytest.mark.parametrize("size", SIZES)
def test_fused_attention_equals_explicit_softmax(size):
    ours = ours_from(fair_esm_model(size, seed=3))
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES)
    layers = list(range(ours.num_layers + 1))
    with torch.no_grad():
        fused = ours(tokens, repr_layers=layers)
        explicit = ours(tokens, repr_layers=layers, need_head_weights=True)
    assert "attentions" not in fused and "attentions" in explicit
    torch.testing.assert_close(fused["logits"], explicit["logits"], **TOL)
    for layer in layers:
        torch.testing.assert_close(fused["representations"][layer], explicit["representations"][layer], **TOL)


def test_negative_layers_and_range_check():
    ours = ours_from(fair_esm_model(SIZES[1]))
    tokens = ESM_ALPHABET.batch_encode(SEQUENCES[:2])
    with torch.no_grad():
        out = ours(tokens, repr_layers=[-1, 3, -4, 0])
    assert sorted(out["representations"]) == [-4, -1, 0, 3]
    assert torch.equal(out["representations"][-1], out["representations"][3])
    assert torch.equal(out["representations"][-4], out["representations"][0])
    with pytest.raises(ValueError, match="out of range"):
        ours(tokens, repr_layers=[4])
    with pytest.raises(ValueError, match="out of range"):
        ours(tokens, repr_layers=[-5])


def test_official_sizes_build():
    from esmfold_lite.lm.esm2 import ESM2_ARCHITECTURES

    expected = {"8M": (6, 320), "35M": (12, 480), "150M": (30, 640), "650M": (33, 1280), "3B": (36, 2560)}
    expected["15B"] = (48, 5120)
    for name, config in ESM2_ARCHITECTURES.items():
        size = name.split("_")[2]
        assert (config.num_layers, config.embed_dim) == expected[size]
    with torch.device("meta"):  # shapes only, no memory
        model = ESM2(ESM2_ARCHITECTURES["esm2_t48_15B_UR50D"])
    assert model.layers[0].self_attn.head_dim == 128
    assert model.contact_head.regression.in_features == 48 * 40
