"""Loading ESM-2 checkpoints: official fair-esm .pt -> transformers folder -> own format, all equal fair-esm."""

import json
import subprocess
import sys
import warnings

import esm
import pytest
import torch
from fair_esm_files import save_fair_lm
from omegaconf import OmegaConf
from randomize import randomize_
from transformers import EsmConfig, EsmForMaskedLM, EsmModel

import esmfold_lite
from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.cli import main
from esmfold_lite.lm.esm2 import ESM2
from esmfold_lite.weights import esm2_format, own_format
from esmfold_lite.weights.esm2_format import (
    esm2_to_hf_key,
    esm2_to_hf_state_dict,
    hf_to_esm2_key,
    save_esm2,
)
from esmfold_lite.weights.language_model import peek_language_model, read_language_model
from esmfold_lite.weights.safe_pickle import CheckpointError

NUM_LAYERS, EMBED_DIM, HEADS = 3, 40, 5
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "AC<mask>DEFGHIK", "MLVW"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def fair() -> esm.model.esm2.ESM2:
    model = esm.model.esm2.ESM2(NUM_LAYERS, EMBED_DIM, HEADS, esm.Alphabet.from_architecture("ESM-1b"), True)
    randomize_(model)
    return model.eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return ESM_ALPHABET.batch_encode(SEQUENCES)


@pytest.fixture(scope="module")
def expected(fair, tokens) -> dict:
    with torch.no_grad():
        return fair(tokens, repr_layers=range(NUM_LAYERS + 1), return_contacts=True)


def save_official(fair: esm.model.esm2.ESM2, path, with_regression: bool = True) -> None:
    """Write ``fair`` the way the released ESM-2 files are laid out: omegaconf cfg, prefixed keys, separate
    ``<stem>-contact-regression.pt``."""
    cfg = OmegaConf.create(
        {
            "_name": "esm2",
            "encoder_layers": fair.num_layers,
            "encoder_embed_dim": fair.embed_dim,
            "encoder_ffn_embed_dim": 4 * fair.embed_dim,
            "encoder_attention_heads": fair.attention_heads,
            "token_dropout": True,
            "dropout": 0.0,
        }
    )
    header = {"cfg": {"model": cfg, "task": OmegaConf.create({"_name": "mlm"})}}
    # rot_emb.inv_freq buffers included, as released
    save_fair_lm(path, fair.state_dict(), header, regression="beside" if with_regression else "none")


def fair_state(fair: esm.model.esm2.ESM2) -> dict:
    """fair-esm's state dict in ESM2's names: the same, minus the rotary buffers."""
    return {k: v for k, v in fair.state_dict().items() if not k.endswith("inv_freq")}


def hf_config() -> EsmConfig:
    return EsmConfig(
        vocab_size=33,
        hidden_size=EMBED_DIM,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * EMBED_DIM,
        layer_norm_eps=1e-5,
        position_embedding_type="rotary",
        token_dropout=True,
        pad_token_id=1,
        mask_token_id=32,
        emb_layer_norm_before=False,
    )


def assert_matches(model: ESM2, expected: dict, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        ours = model(tokens, repr_layers=range(NUM_LAYERS + 1), return_contacts=True)
    torch.testing.assert_close(ours["logits"], expected["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["contacts"], expected["contacts"], atol=ATOL, rtol=0)
    for layer in range(NUM_LAYERS + 1):
        torch.testing.assert_close(
            ours["representations"][layer], expected["representations"][layer], atol=ATOL, rtol=0
        )


@pytest.fixture(scope="module")
def official_pt(fair, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "esm2_t3_tiny.pt"
    save_official(fair, path)
    return path


def test_written_official_file_is_what_fair_esm_loads(fair, official_pt):
    data = torch.load(official_pt, weights_only=False)
    regression = torch.load(esm2_format.contact_regression_path(official_pt), weights_only=False)
    reloaded, _ = esm.pretrained.load_model_and_alphabet_core("esm2_t3_tiny", data, regression)  # strict
    for key, value in fair.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_loading_initialises_nothing_and_imports_no_compiler(official_pt):
    """The module is built on the meta device with its initialisers skipped: no random init (whose meta version
    imports torch._dynamo, 1.5 s a process) and every value from the file."""
    script = (
        "import sys, torch, esmfold_lite\n"
        f"model = esmfold_lite.load_language_model({str(official_pt)!r})\n"
        "assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_official_pt_transformers_and_own_format_chain(fair, tokens, expected, official_pt, tmp_path, monkeypatch):
    from_pt = esmfold_lite.load_language_model(official_pt)
    assert not from_pt.training and isinstance(from_pt, ESM2)
    assert from_pt.lm_head.weight is from_pt.embed_tokens.weight  # tie restored
    assert_matches(from_pt, expected, tokens)

    # the same weights as a transformers EsmForMaskedLM folder (its own forward checks our reverse renaming)
    hf = EsmForMaskedLM(hf_config()).eval()
    hf_state = esm2_to_hf_state_dict(fair_state(fair))
    hf.load_state_dict(hf_state, strict=False)
    assert {k for k in hf.state_dict() if not k.endswith("inv_freq")} == set(hf_state)
    with torch.no_grad():
        hf_logits = hf(tokens, attention_mask=tokens.ne(ESM_ALPHABET.padding_idx)).logits
    torch.testing.assert_close(hf_logits, expected["logits"], atol=ATOL, rtol=0)
    hf.save_pretrained(tmp_path / "hf")
    from_hf = esmfold_lite.load_language_model(tmp_path / "hf")
    assert_matches(from_hf, expected, tokens)

    # converted to the own format (CLI), loaded without any unpickling: identical tensors
    assert main(["weights", "convert", str(official_pt), str(tmp_path / "own")]) == 0
    meta = json.loads((tmp_path / "own.json").read_text())
    assert meta["format"] == "esmfold_lite" and meta["kind"] == "esm2"
    assert meta["config"] == {
        "num_layers": NUM_LAYERS,
        "embed_dim": EMBED_DIM,
        "attention_heads": HEADS,
        "token_dropout": True,
        "lm_head": True,
    }

    def refuse(*args, **kwargs):
        raise AssertionError("the own format must load without unpickling")

    monkeypatch.setattr(esm2_format, "load_checkpoint", refuse)
    from_own = esmfold_lite.load_language_model(tmp_path / "own")  # the stem names the file pair
    for (name, a), (_, b) in zip(from_pt.state_dict().items(), from_own.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert_matches(from_own, expected, tokens)


def test_transformers_esm_model_folder_without_lm_head(fair, tokens, expected, tmp_path):
    hf = EsmModel(hf_config(), add_pooling_layer=True).eval()  # keys without "esm.", a pooler, no LM head
    state = {k: v for k, v in fair_state(fair).items() if not k.startswith("lm_head.")}
    hf_state = esm2_to_hf_state_dict(state, prefix="")
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    assert not unexpected and all(k.startswith("pooler.") or k.endswith("inv_freq") for k in missing)
    hf.save_pretrained(tmp_path)
    model = esmfold_lite.load_language_model(tmp_path)
    assert model.lm_head is None
    with torch.no_grad():
        ours = model(tokens, repr_layers=[NUM_LAYERS], return_contacts=True)
        theirs = hf(tokens, attention_mask=tokens.ne(ESM_ALPHABET.padding_idx)).last_hidden_state
    assert "logits" not in ours
    torch.testing.assert_close(ours["representations"][NUM_LAYERS], theirs, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["representations"][NUM_LAYERS], expected["representations"][NUM_LAYERS])
    torch.testing.assert_close(ours["contacts"], expected["contacts"], atol=ATOL, rtol=0)


def test_save_esm2_folder_roundtrip_and_dtype(official_pt, tmp_path):
    model = esmfold_lite.load_language_model(official_pt, dtype="bf16")
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    save_esm2(model, tmp_path)  # an existing folder -> model.safetensors + model.json
    assert (tmp_path / "model.safetensors").is_file() and own_format.is_own_format(tmp_path)
    checkpoint = read_language_model(tmp_path)
    config, state = checkpoint.config, checkpoint.state
    assert checkpoint.kind == "esm2"
    for half in ("model.json", "model.safetensors"):
        assert read_language_model(tmp_path / half).config == config
    assert state["lm_head.weight"] is state["embed_tokens.weight"]
    assert torch.equal(state["layers.2.fc1.weight"], model.layers[2].fc1.weight)


def test_missing_contact_regression_warns_but_loads(fair, tokens, expected, tmp_path):
    path = tmp_path / "no_regression.pt"
    save_official(fair, path, with_regression=False)
    with pytest.warns(UserWarning, match="no_regression-contact-regression.pt"):
        model = esmfold_lite.load_language_model(path)
    with torch.no_grad():
        logits = model(tokens)["logits"]
    torch.testing.assert_close(logits, expected["logits"], atol=ATOL, rtol=0)


def test_registry_name_resolves_through_cache(official_pt, monkeypatch, tmp_path):
    cache = tmp_path / "home" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "esm2_t6_8M_UR50D.pt").write_bytes(official_pt.read_bytes())
    regression = esm2_format.contact_regression_path(official_pt).read_bytes()
    (cache / "esm2_t6_8M_UR50D-contact-regression.pt").write_bytes(regression)
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # regression found beside it: no warning
        model = esmfold_lite.load_language_model("esm2_t6_8M_UR50D")
    assert model.num_layers == NUM_LAYERS


def test_strict_loading_lists_missing_and_unexpected_keys(fair, tmp_path):
    path = tmp_path / "broken.pt"
    save_official(fair, path)
    data = torch.load(path, weights_only=False)
    del data["model"]["encoder.sentence_encoder.layers.1.fc1.weight"]
    data["model"]["encoder.sentence_encoder.extra.weight"] = torch.zeros(1)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"missing keys: layers\.1\.fc1\.weight.*unexpected keys: extra\.weight"):
        esmfold_lite.load_language_model(path)


def test_errors_name_the_source_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint: no_such_model"):
        esmfold_lite.load_language_model("no_such_model")
    with pytest.raises(CheckpointError, match="esmfold_v1 is not an ESM-2 .*load_model"):
        esmfold_lite.load_language_model("esmfold_v1")  # refused before any download
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="expected config.json in folder"):
        esmfold_lite.load_language_model(tmp_path / "folder")
    esmfold = tmp_path / "esmfold.pt"
    torch.save({"cfg": {"model": {"trunk": {"num_blocks": 1}}}, "model": {"trunk.x": torch.zeros(1)}}, esmfold)
    with pytest.raises(CheckpointError, match="ESMFold checkpoint.*load_model"):
        esmfold_lite.load_language_model(esmfold)
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="lone .safetensors file"):
        esmfold_lite.load_language_model(tmp_path / "weights.safetensors")
    assert main(["weights", "convert", str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 1


def test_hf_key_renaming_both_ways():
    assert hf_to_esm2_key("esm.encoder.layer.3.attention.self.query.weight") == "layers.3.self_attn.q_proj.weight"
    assert hf_to_esm2_key("encoder.layer.0.LayerNorm.gamma") == "layers.0.final_layer_norm.weight"  # EsmModel, old
    assert hf_to_esm2_key("esm.encoder.layer.0.attention.LayerNorm.beta") == "layers.0.self_attn_layer_norm.bias"
    assert hf_to_esm2_key("lm_head.decoder.weight") == "lm_head.weight"
    assert hf_to_esm2_key("esm.embeddings.position_ids") is None
    assert hf_to_esm2_key("pooler.dense.weight") is None
    assert hf_to_esm2_key("esm.encoder.layer.0.attention.self.rotary_embeddings.inv_freq") is None
    assert hf_to_esm2_key("esm.embeddings.layer_norm.weight") == "esm.embeddings.layer_norm.weight"  # not ESM-2
    model_keys = ESM2(esmfold_lite.lm.ESM2Config(2, 8, 2)).state_dict()
    for key in model_keys:
        assert hf_to_esm2_key(esm2_to_hf_key(key)) == key
        assert hf_to_esm2_key(esm2_to_hf_key(key, prefix="")) == key
    assert esm2_to_hf_key("layers.1.fc2.bias", prefix="") == "encoder.layer.1.output.dense.bias"


def test_cli_converts_fair_esmfold_with_its_lm(tmp_path):
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    esmfold_pt, lm_pt = write_fair_esmfold(tiny_hf_esmfold(num_blocks=1, sm_blocks=1), tmp_path / "fair")
    lm_elsewhere = tmp_path / "lm" / "my_lm.pt"
    lm_elsewhere.parent.mkdir()
    lm_pt.rename(lm_elsewhere)
    esm2_format.contact_regression_path(lm_pt).rename(esm2_format.contact_regression_path(lm_elsewhere))
    out = tmp_path / "esmfold_own"
    assert main(["weights", "convert", str(esmfold_pt), str(out), "--lm", str(lm_elsewhere)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["kind"] == "esmfold"
    original = esmfold_lite.load_model(esmfold_pt, lm=lm_elsewhere)
    converted = esmfold_lite.load_model(out)
    for (name, a), (_, b) in zip(original.state_dict().items(), converted.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert main(["weights", "convert", str(lm_elsewhere), str(tmp_path / "x"), "--lm", str(lm_elsewhere)]) == 1


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_converted_pair_has_the_usual_permissions(official_pt, tmp_path, umask):
    """Both files of `weights convert` get 0666 minus the umask (safetensors' own writer creates 0600)."""
    import os

    old = os.umask(umask)
    try:
        assert main(["weights", "convert", str(official_pt), str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    modes = {suffix: (tmp_path / f"out{suffix}").stat().st_mode & 0o777 for suffix in (".safetensors", ".json")}
    assert modes == {".safetensors": 0o666 & ~umask, ".json": 0o666 & ~umask}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.safetensors"]  # no temporary files


def test_pair_is_written_tensors_first_json_last(official_pt, tmp_path, monkeypatch):
    """The json marks the pair complete: written last, atomically, and an earlier json is gone before the tensors
    it described are replaced."""
    model = esmfold_lite.load_language_model(official_pt)
    stem = save_esm2(model, tmp_path / "m")
    seen = []
    real_write = own_format.atomic_write_text

    def write_json(path, text):
        seen.append((path.name, stem.with_suffix(".json").exists(), stem.with_suffix(".safetensors").stat().st_size))
        real_write(path, text)

    monkeypatch.setattr(own_format, "atomic_write_text", write_json)
    model.config.token_dropout = False  # a different json: the pair must not mix the two
    save_esm2(model, tmp_path / "m")
    assert seen == [("m.json", False, stem.with_suffix(".safetensors").stat().st_size)]
    assert json.loads(stem.with_suffix(".json").read_text())["config"]["token_dropout"] is False


def test_convert_help_names_esm_c(capsys):
    with pytest.raises(SystemExit):
        main(["weights", "convert", "--help"])
    assert "ESM C" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["weights", "--help"])
    assert "ESM C" in capsys.readouterr().out


def test_peek_gives_what_reading_gives_without_reading_a_tensor(official_pt, tmp_path, monkeypatch):
    EsmForMaskedLM(hf_config()).save_pretrained(tmp_path / "hf")
    EsmModel(hf_config(), add_pooling_layer=False).save_pretrained(tmp_path / "headless")
    assert main(["weights", "convert", str(official_pt), str(tmp_path / "own")]) == 0
    sources = [official_pt, tmp_path / "hf", tmp_path / "headless", tmp_path / "own.json"]
    read = {source: read_language_model(source) for source in sources}

    def refuse(*args, **kwargs):
        raise AssertionError("peeking reads no tensor")

    monkeypatch.setattr(esm2_format, "load_file", refuse)
    monkeypatch.setattr(own_format, "load_file", refuse)
    for source in sources:
        assert peek_language_model(source) == (read[source].kind, read[source].config), source
    assert peek_language_model(tmp_path / "headless")[1]["lm_head"] is False
    (tmp_path / "headless" / "model.safetensors").unlink()  # a folder without weights is not one without an LM head
    with pytest.raises(CheckpointError, match="expected model.safetensors or pytorch_model.bin"):
        peek_language_model(tmp_path / "headless")
    with pytest.raises(CheckpointError, match="is a lone .safetensors file"):
        peek_language_model(tmp_path / "hf" / "model.safetensors")
