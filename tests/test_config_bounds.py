"""A config that names absurd sizes, or sizes its tensors do not have, is refused before any module is built: a
CheckpointError naming the file, the field as the file spells it, its value and what the tensors say (or the bound),
for every format that carries a config (``weights.config_check``). The CLI refuses 10^6 layers in seconds and at a
few hundred MB."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from argparse import Namespace
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold
from fair_esm_files import save_fair_lm
from transformers import EsmConfig, EsmForMaskedLM

import esmfold_lite
from esmfold_lite.lm.esm1 import ESM1, ESM1Config
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.esmc import ESMC, ESMCConfig
from esmfold_lite.lm.load import on_meta
from esmfold_lite.lm.msa_transformer import MSATransformer, MSATransformerConfig
from esmfold_lite.weights.config_check import MAX_DEPTH, MAX_ITERATIONS
from esmfold_lite.weights.esm1_format import swap_axial_attention_names
from esmfold_lite.weights.esm2_format import save_esm2
from esmfold_lite.weights.esmc_format import esmc_to_official_state_dict, read_official_esmc
from esmfold_lite.weights.esmfold_format import save_esmfold
from esmfold_lite.weights.language_model import peek_language_model
from esmfold_lite.weights.own_format import save_own_format
from esmfold_lite.weights.safe_pickle import CheckpointError

HUGE = 10**6
TOO_DEEP = f"is {HUGE}, but it must be at most {MAX_DEPTH} (the weights hold 2)"


@pytest.fixture(scope="module")
def hf_esmfold() -> torch.nn.Module:
    return tiny_hf_esmfold()


@pytest.fixture(scope="module")
def fair_pair(hf_esmfold, tmp_path_factory) -> tuple[Path, Path]:
    return write_fair_esmfold(hf_esmfold, tmp_path_factory.mktemp("fair"))


def edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def edited_pt(source: Path, target: Path, edit) -> Path:
    """A copy of the ``torch.save`` file ``source`` at ``target`` with ``edit`` applied to its content (test-written
    files only: read with the full unpickler)."""
    data = torch.load(source, weights_only=False)
    edit(data)
    torch.save(data, target)
    return target


def refused(load, *fields: str) -> str:
    """The message of the CheckpointError ``load()`` raises; it names every one of ``fields``."""
    with pytest.raises(CheckpointError) as caught:
        load()
    message = str(caught.value)
    assert "does not fit its weights" in message, message
    for field in fields:
        assert field in message, (field, message)
    return message


def set_path(config: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config[part]
    config[leaf] = value


# transformers ESMFold folder: config.json (LM fields, esmfold_config with transformers' structure-module names)
HF_ESMFOLD_CASES = [
    ("num_hidden_layers", HUGE, f"num_hidden_layers {TOO_DEEP}"),
    ("num_hidden_layers", 3, "num_hidden_layers is 3, but the weights hold 2 (up to layers.1.*)"),
    ("hidden_size", HUGE, "hidden_size is 1000000, but embed_tokens.weight has shape (33, 32), which means"),
    ("num_attention_heads", 8, "num_attention_heads is 8, but contact_head.regression.weight has shape (1, 8)"),
    ("esmfold_config.trunk.num_blocks", HUGE, f"esmfold_config.trunk.num_blocks {TOO_DEEP}"),
    ("esmfold_config.trunk.num_blocks", 1, "esmfold_config.trunk.num_blocks is 1, but the weights hold 2"),
    ("esmfold_config.trunk.sequence_state_dim", HUGE, "trunk.recycle_s_norm.weight has shape (32,)"),
    ("esmfold_config.trunk.max_recycles", HUGE, f"it must be at least 1 and at most {MAX_ITERATIONS}"),
    ("esmfold_config.trunk.structure_module.num_blocks", HUGE, f"at most {MAX_ITERATIONS}"),
    ("esmfold_config.trunk.structure_module.sequence_dim", 25, "layer_norm_s.weight has shape (24,)"),
    ("esmfold_config.trunk.sequence_head_width", 5, "it must divide esmfold_config.trunk.sequence_state_dim (32)"),
    ("esmfold_config.lddt_head_hid_dim", "16", "is '16', not a whole number"),
]


@pytest.mark.parametrize(("field", "value", "says"), HF_ESMFOLD_CASES)
def test_transformers_esmfold_folder(hf_esmfold, tmp_path, field, value, says):
    hf_esmfold.save_pretrained(tmp_path)

    def edit(config):
        set_path(config, field, value)
        if field == "hidden_size":
            config["intermediate_size"] = 4 * HUGE  # else refused earlier, as not an ESM-2 layout

    edit_json(tmp_path / "config.json", edit)
    message = refused(lambda: esmfold_lite.load_model(tmp_path), field, says, str(tmp_path / "config.json"))
    assert "\n" not in message


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("trunk.num_blocks", HUGE, f"cfg.model.trunk.num_blocks {TOO_DEEP}"),
        ("trunk.structure_module.no_blocks", HUGE, "cfg.model.trunk.structure_module.no_blocks is 1000000"),
        ("trunk.structure_module.c_ipa", 9, "ipa.linear_q.weight has shape (24, 24), which means"),
        ("lddt_head_hid_dim", HUGE, "lddt_head.1.weight has shape (16, 24)"),
    ],
)
def test_fair_esmfold_pt(fair_pair, tmp_path, field, value, says):
    esmfold_pt, lm_pt = fair_pair
    edit = lambda data: set_path(data["cfg"]["model"], field, value)  # noqa: E731
    edited = edited_pt(esmfold_pt, tmp_path / "esmfold_3B_v1.pt", edit)
    refused(lambda: esmfold_lite.load_model(edited, lm=lm_pt), says, str(edited))


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("encoder_layers", HUGE, f"cfg.model.encoder_layers {TOO_DEEP}"),
        ("encoder_embed_dim", HUGE, "cfg.model.encoder_embed_dim is 1000000, but embed_tokens.weight has shape"),
        ("encoder_attention_heads", 7, "it must divide cfg.model.encoder_embed_dim (32)"),
    ],
)
def test_fair_esm2_pt(fair_pair, tmp_path, field, value, says):
    edited = edited_pt(fair_pair[1], tmp_path / "esm2.pt", lambda data: set_path(data["cfg"]["model"], field, value))
    refused(lambda: esmfold_lite.load_language_model(edited), says, str(edited))
    refused(lambda: peek_language_model(edited), says)
    # as the LM of a fair-esm ESMFold, too
    refused(lambda: esmfold_lite.load_model(fair_pair[0], lm=edited), says)


def fair_args_pt(model: torch.nn.Module, path: Path, args: Namespace, swap: bool = False) -> Path:
    """A model in the released ESM-1b / MSA Transformer layout (``args`` + keys prefixed as fairseq's), its contact
    regression kept in the file, where the config checks see its shape."""
    state = {swap_axial_attention_names(key) if swap else key: value for key, value in model.state_dict().items()}
    return save_fair_lm(path, state, {"args": args}, regression="inside")


ESM1_ARGS = dict(arch="roberta_large", encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=48,
                 encoder_attention_heads=4, max_positions=40)  # fmt: skip


@pytest.mark.parametrize(
    ("arg", "value", "says"),
    [
        ("encoder_layers", HUGE, f"args.encoder_layers {TOO_DEEP}"),
        ("encoder_embed_dim", HUGE, "args.encoder_embed_dim is 1000000"),
        ("encoder_ffn_embed_dim", HUGE, "layers.0.fc1.weight has shape (48, 32), which means"),
        ("max_positions", HUGE, "embed_positions.weight has shape (42, 32), which means args.max_positions = 40"),
        ("encoder_attention_heads", 8, "contact_head.regression.weight has shape (1, 8)"),
    ],
)
def test_esm1b_pt(tmp_path, arg, value, says):
    model = on_meta(lambda: ESM1(ESM1Config(2, 32, 48, 4, max_positions=40))).to_empty(device="cpu")
    path = fair_args_pt(model, tmp_path / "esm1b_t2.pt", Namespace(**{**ESM1_ARGS, arg: value}))
    refused(lambda: esmfold_lite.load_language_model(path), says, str(path))


@pytest.mark.parametrize(
    ("arg", "value", "says"),
    [
        ("layers", HUGE, f"args.layers {TOO_DEEP}"),
        ("attention_heads", 5, "it must divide args.embed_dim (32)"),
        ("max_tokens_per_msa", -1, "args.max_tokens_per_msa is -1, not a whole number of at least 0"),
    ],
)
def test_msa_transformer_pt(tmp_path, arg, value, says):
    config = MSATransformerConfig(2, 32, 48, 4, max_positions=40, msa_position_dim=32)
    model = on_meta(lambda: MSATransformer(config)).to_empty(device="cpu")
    args = dict(arch="msa_transformer", layers=2, embed_dim=32, ffn_embed_dim=48, attention_heads=4,
                max_positions=40, embed_positions_msa=True, max_tokens_per_msa=2**14)  # fmt: skip
    path = fair_args_pt(model, tmp_path / "msa.pt", Namespace(**{**args, arg: value}), swap=True)
    refused(lambda: esmfold_lite.load_language_model(path), says, str(path))


def tiny_esmc() -> ESMC:
    return on_meta(lambda: ESMC(ESMCConfig(2, 64, 4))).to_empty(device="cpu")


def test_esmc_official_file_heads_must_divide_the_width(tmp_path):
    path = tmp_path / "esmc.pth"
    torch.save(esmc_to_official_state_dict(tiny_esmc().state_dict()), path)
    assert read_official_esmc(path, attention_heads=8)[0]["attention_heads"] == 8
    refused(lambda: read_official_esmc(path, attention_heads=5), "attention_heads is 5, but it must divide embed_dim")


@pytest.mark.parametrize(
    ("kind", "field", "value", "says"),
    [
        ("esm2", "num_layers", HUGE, f"config.num_layers {TOO_DEEP}"),
        ("esm2", "embed_dim", HUGE, "config.embed_dim is 1000000, but embed_tokens.weight has shape (33, 32)"),
        ("esm2", "attention_heads", 8, "contact_head.regression.weight has shape (1, 8)"),
        ("esmc", "num_layers", HUGE, "config.num_layers is 1000000"),
        ("esmc", "attention_heads", 5, "it must divide config.embed_dim (64)"),
        ("esmc", "ffn_dim", HUGE, "layers.0.ffn.w_in.weight has shape (512, 64), which means config.ffn_dim = 256"),
    ],
)
def test_own_language_model_format(tmp_path, kind, field, value, says):
    if kind == "esm2":
        stem = save_esm2(on_meta(lambda: ESM2(ESM2Config(2, 32, 4))).to_empty(device="cpu"), tmp_path / "lm")
    else:
        model = tiny_esmc()
        stem = save_own_format(tmp_path / "lm", "esmc", asdict(model.config), model.state_dict())
    edit_json(stem.with_suffix(".json"), lambda meta: set_path(meta["config"], field, value))
    refused(lambda: esmfold_lite.load_language_model(stem), says, str(stem))
    refused(lambda: peek_language_model(stem), says)


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("esmfold.trunk.num_blocks", f"config.esmfold.trunk.num_blocks {TOO_DEEP}"),
        ("lm.num_layers", f"config.lm.num_layers {TOO_DEEP}"),
    ],
)
def test_own_esmfold_format(hf_esmfold, tmp_path, field, says):
    hf_esmfold.save_pretrained(tmp_path / "hf")
    stem = save_esmfold(esmfold_lite.load_model(tmp_path / "hf"), tmp_path / "own")
    edit_json(stem.with_suffix(".json"), lambda meta: set_path(meta["config"], field, HUGE))
    refused(lambda: esmfold_lite.load_model(stem), says, str(stem))


@pytest.mark.parametrize(
    ("index", "says"),
    [(HUGE - 1, f"config.num_layers is 1000000, but it must be at most {MAX_DEPTH} (the weights hold 3)"),
     (9, "config.num_layers is 10, but the weights hold layers.N.* for 3 of N = 0..9")],
)  # fmt: skip
def test_a_stray_layer_index_asks_for_no_deeper_model(tmp_path, index, says):
    model = on_meta(lambda: ESM2(ESM2Config(2, 32, 4))).to_empty(device="cpu")
    state = {**model.state_dict(), f"layers.{index}.fc1.weight": torch.zeros(128, 32)}
    stem = save_own_format(tmp_path / "lm", "esm2", {**asdict(model.config), "num_layers": index + 1}, state)
    refused(lambda: esmfold_lite.load_language_model(stem), says)


def test_transformers_esm2_folder(tmp_path):
    config = EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, position_embedding_type="rotary", pad_token_id=1, mask_token_id=32,
                       emb_layer_norm_before=False)  # fmt: skip
    EsmForMaskedLM(config).save_pretrained(tmp_path)
    edit_json(tmp_path / "config.json", lambda c: c.update(num_hidden_layers=HUGE))
    says = f"num_hidden_layers {TOO_DEEP}"
    refused(lambda: esmfold_lite.load_language_model(tmp_path), says, str(tmp_path / "config.json"))
    refused(lambda: peek_language_model(tmp_path), says)


PEAK_RSS = """import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "esmfold_lite.cli", *sys.argv[1:]], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"""


def test_cli_refuses_a_million_layers_in_seconds_and_little_memory(hf_esmfold, tmp_path):
    folder = tmp_path / "hostile"
    hf_esmfold.save_pretrained(folder)

    def edit(config):
        config.update(num_hidden_layers=HUGE, hidden_size=HUGE, intermediate_size=4 * HUGE)
        config["esmfold_config"]["trunk"]["num_blocks"] = HUGE

    edit_json(folder / "config.json", edit)
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQRQISFVKSHFSRQ\n")
    start = time.monotonic()
    run = subprocess.run(  # the measuring parent's children are the CLI alone
        [sys.executable, "-c", PEAK_RSS, "predict", str(fasta), "-o", str(tmp_path / "out"), "--model", str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    seconds = time.monotonic() - start
    returncode, peak_kib = map(int, run.stdout.split())
    error = run.stderr.strip().splitlines()[-1]
    assert returncode == 1, run.stderr
    assert error.startswith("esmfold-lite predict: error: ") and str(folder / "config.json") in error, run.stderr
    for problem in ("num_hidden_layers is 1000000", "hidden_size is 1000000", "esmfold_config.trunk.num_blocks is"):
        assert problem in error, error
    assert seconds < 60, seconds  # generous: a busy 2-core machine; minutes before the check
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib} KiB"
    assert not list((tmp_path / "out").glob("*.pdb"))
