"""Contacts from a language model loaded without its contact regression (ESM-1v; a .pt without its
``<stem>-contact-regression.pt``) are refused by the API with a ValueError naming the model and the fix, as ESM C's
are, instead of a map of 0.5 everywhere."""

import warnings
from dataclasses import asdict

import pytest
import torch
from randomize import randomize_
from safetensors.torch import save_file
from test_esm1_parity import fair_model
from test_esm1_parity import save_official as save_official_esm1
from test_esm2_loading import hf_config
from test_esm2_loading import save_official as save_official_esm2
from test_esm2_parity import fair_esm_model

import esmfold_lite
from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.load import build_language_model
from esmfold_lite.lm.msa_transformer import MSATransformer, MSATransformerConfig
from esmfold_lite.weights.esm2_format import esm2_to_hf_state_dict
from esmfold_lite.weights.language_model import read_language_model
from esmfold_lite.weights.own_format import save_own_format

TOKENS = ESM_ALPHABET.batch_encode(["MKTAYIAK"])


def assert_refuses_contacts(model, fix: str) -> None:
    name = type(model).__name__
    assert not model.contact_head.has_regression
    for ask in (
        lambda: model(TOKENS, return_contacts=True),
        lambda: model.predict_contacts(TOKENS),
        lambda: model.embed(["MKT"], contacts=True),
    ):
        with pytest.raises(ValueError, match=rf"^{name} was loaded without contact regression weights.*{fix}"):
            ask()
    with torch.no_grad():
        assert model(TOKENS)["logits"].shape[:2] == TOKENS.shape  # everything else still works
    assert model.embed(["MKT"]).contacts is None


def test_esm1v_has_no_contact_head(tmp_path):
    path = tmp_path / "esm1v_t3_tiny_1.pt"
    save_official_esm1(fair_model(token_dropout=True, seed=1), path, with_regression=False)
    model = esmfold_lite.load_language_model(path)
    assert_refuses_contacts(model, "ESM-1v has no contact head")
    converted = tmp_path / "esm1v_converted"  # a converted ESM-1v refuses the same (its regression is stored as zeros)
    save_own_format(converted, "esm1b", asdict(model.config), model.state_dict())
    assert_refuses_contacts(esmfold_lite.load_language_model(converted), "ESM-1v has no contact head")


def test_esm2_without_its_regression_file(tmp_path):
    path = tmp_path / "esm2_tiny.pt"
    save_official_esm2(fair_esm_model((2, 16, 4)), path, with_regression=False)
    with pytest.warns(UserWarning, match="esm2_tiny-contact-regression.pt"):
        model = esmfold_lite.load_language_model(path)
    assert_refuses_contacts(model, "put esm2_tiny-contact-regression.pt .*beside the checkpoint")  # names the file


def test_with_the_regression_contacts_are_given(tmp_path):
    path = tmp_path / "esm2_tiny.pt"
    save_official_esm2(fair_esm_model((2, 16, 4)), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = esmfold_lite.load_language_model(path)
    assert model.contact_head.has_regression
    (contacts,) = model.embed(["MKTAY"], contacts=True).contacts
    assert contacts.shape == (5, 5) and not torch.allclose(contacts, torch.full_like(contacts, 0.5))
    model.contact_head.regression.weight.data.zero_()  # zeroed by hand, not loaded: the flag is a load-time fact
    assert model.contact_head.has_regression


def test_msa_transformer_without_its_regression(tmp_path):
    config = MSATransformerConfig(num_layers=1, embed_dim=8, ffn_embed_dim=16, attention_heads=2, max_positions=32)
    model = randomize_(MSATransformer(config))
    assert model.contact_head.has_regression  # built in memory: its (random) regression counts
    state = {k: (torch.zeros_like(v) if k.startswith("contact_head.") else v) for k, v in model.state_dict().items()}
    save_own_format(tmp_path / "msa", "msa", asdict(config), state)
    loaded = build_language_model(read_language_model(tmp_path / "msa"), tmp_path / "msa").eval()
    assert not loaded.contact_head.has_regression
    with pytest.raises(ValueError, match="^MSATransformer was loaded without contact regression weights"):
        loaded(ESM_ALPHABET.batch_encode(["MKTA", "MKSA"])[None], return_contacts=True)
    with pytest.raises(ValueError, match="-contact-regression.pt"):
        loaded.embed([["MKTA", "MKSA"]], contacts=True)


def without_regression(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("contact_head.")}


def test_the_hint_is_the_one_of_the_format_read(tmp_path):
    """The reader of each format says where its missing regression comes from; a state dict loaded by hand with an
    all-zero regression (an older converted file, an ESMFold's language model) is refused too."""
    model = randomize_(ESM2(ESM2Config(3, 40, 5, token_dropout=True)))  # the size of test_esm2_loading.hf_config
    folder = tmp_path / "hf"  # a transformers folder saved without esm.contact_head.regression.*
    hf_config().save_pretrained(folder)
    save_file(esm2_to_hf_state_dict(without_regression(model)), str(folder / "model.safetensors"))
    with pytest.warns(UserWarning, match="no contact regression weights"):
        from_folder = esmfold_lite.load_language_model(folder)
    assert_refuses_contacts(from_folder, "the transformers folder holds no contact_head.regression tensors")

    zeros = {k: (torch.zeros_like(v) if k.startswith("contact_head.") else v) for k, v in model.state_dict().items()}
    save_own_format(tmp_path / "converted", "esm2", asdict(model.config), zeros)  # as `weights convert` writes it
    converted = esmfold_lite.load_language_model(tmp_path / "converted")
    assert_refuses_contacts(converted, "convert again")
    with pytest.raises(ValueError) as refused:
        converted.predict_contacts(TOKENS)
    assert "ESM-1v" not in str(refused.value)  # an ESM-2 file: no word on ESM-1v

    by_hand = ESM2(model.config)
    by_hand.load_state_dict(zeros)
    assert_refuses_contacts(by_hand.eval(), "all-zero regression")
