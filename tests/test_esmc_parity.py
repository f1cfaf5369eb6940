"""ESM C equals the ``esm`` package's (EvolutionaryScale) own ``ESMC`` on randomized tiny models (fp32, CPU).

The reference runs in a subprocess (``esmc_reference.py``) with ``PYTHONPATH=.ci/esm``, where ``.ci/run`` installs
``esm==3.2.1.post1`` without its dependencies (its top-level ``esm`` would shadow fair-esm's, and it pins a
transformers older than the test extra's). Without ``.ci/esm`` the parity tests are skipped, or fail when
``ESMFOLD_LITE_REQUIRE_ESM=1`` (set by ``.ci/run``). Weights travel as files: ours randomized and renamed to the
official keys, loaded strictly by ``ESMC``, which writes the official-format file our loader then reads.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from randomize import randomize_

import esmfold_lite
from esmfold_lite.alphabet import ESM_ALPHABET, ESMC_ALPHABET
from esmfold_lite.cli import main
from esmfold_lite.lm.embed import embed
from esmfold_lite.lm.esmc import ESMC, ESMC_ARCHITECTURES, ESMCConfig
from esmfold_lite.lm.load import build_language_model, load_language_model
from esmfold_lite.lm.variants import STRATEGIES, score_variants
from esmfold_lite.weights import registry
from esmfold_lite.weights.esmc_format import (
    esmc_to_official_state_dict,
    official_to_esmc_state_dict,
    read_official_esmc,
)
from esmfold_lite.weights.language_model import LanguageModelCheckpoint, read_language_model
from esmfold_lite.weights.safe_pickle import CheckpointError

ESM_DIR = Path(__file__).resolve().parents[1] / ".ci" / "esm"
TOL = dict(atol=1e-5, rtol=1e-5)
# name -> (embed_dim, attention_heads, num_layers); the last has heads of width 16, which the official format
# cannot tell (the released models' width is 64), so it is read with attention_heads given
SIZES = {"d128_h2_l3": (128, 2, 3), "d192_h3_l2": (192, 3, 2), "d64_h4_l2": (64, 4, 2)}
MAIN = "d128_h2_l3"
BATCH = ["MKTAYIAKQRQISFVKSHFSRQ", "AC<mask>DEFG<mask>HIK", "MLVW", "GSHM|LEKX<mask>BZUO.-"]
WILD_TYPE = "MKTAYIAKQRQISF"
MUTATIONS = ["M1A", "K2L:T3G", "F14W", "Y5Y", "A7C:K2R", "s13p"]


def require_esm() -> Path:
    if not (ESM_DIR / "esm" / "models" / "esmc.py").is_file():
        reason = (
            f"needs EvolutionaryScale's esm package in {ESM_DIR} (.ci/run installs it: pip install --no-deps "
            "--target .ci/esm esm==3.2.1.post1 and the modules its import needs)"
        )
        if os.environ.get("ESMFOLD_LITE_REQUIRE_ESM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return ESM_DIR


def random_esmc(embed_dim: int, heads: int, layers: int, seed: int = 0) -> ESMC:
    return randomize_(ESMC(ESMCConfig(layers, embed_dim, heads)), seed).eval()


def mutant_of(sequence: str, mutation: str) -> str:
    residues = list(sequence)
    for part in mutation.upper().split(":"):
        residues[int(part[1:-1]) - 1] = part[-1]
    return "".join(residues)


def masked(sequence: str, index: int) -> str:
    return sequence[:index] + "<mask>" + sequence[index + 1 :]


def scoring_sequences() -> list[str]:
    """Every sequence a written-out score of ``MUTATIONS`` needs: the wild type, the mutants, each masked anywhere."""
    plain = list(dict.fromkeys([WILD_TYPE] + [mutant_of(WILD_TYPE, m) for m in MUTATIONS]))
    return plain + [masked(s, i) for s in plain for i in range(len(s))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Per size: the official-format file the ``esm`` package wrote and its outputs; plus its vocabulary."""
    esm_dir = require_esm()
    folder = tmp_path_factory.mktemp("esmc")
    jobs = []
    for seed, (name, (embed_dim, heads, layers)) in enumerate(SIZES.items()):
        state = esmc_to_official_state_dict(random_esmc(embed_dim, heads, layers, seed).state_dict())
        torch.save(state, folder / f"{name}-random.pt")
        singles = BATCH + (scoring_sequences() if name == MAIN else [])
        job = {"d_model": embed_dim, "n_heads": heads, "n_layers": layers, "state": str(folder / f"{name}-random.pt")}
        jobs.append({**job, "out": str(folder / name), "batch": BATCH, "singles": singles})
    request = folder / "request.json"
    request.write_text(json.dumps({"vocab": str(folder / "vocab.json"), "jobs": jobs}))
    script = Path(__file__).with_name("esmc_reference.py")
    env = {**os.environ, "PYTHONPATH": str(esm_dir)}  # EvolutionaryScale's esm before fair-esm's
    done = subprocess.run(
        [sys.executable, str(script), str(request)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"the esm package's ESMC failed:\n{done.stderr[-4000:]}"
    result = {"vocab": json.loads((folder / "vocab.json").read_text())}
    for name in SIZES:
        outputs = torch.load(folder / name / "reference.pt")
        singles = BATCH + (scoring_sequences() if name == MAIN else [])
        outputs["by_sequence"] = dict(zip(singles, outputs["single_logits"], strict=True))
        result[name] = {"path": folder / name / "esmc.pth", "outputs": outputs}
    return result


def load_ours(reference: dict, name: str) -> ESMC:
    path = reference[name]["path"]
    embed_dim, heads, _ = SIZES[name]
    if embed_dim // heads == 64:  # the released models' head width: the loader infers the head count
        return load_language_model(path)
    checkpoint = LanguageModelCheckpoint("esmc", *read_official_esmc(path, attention_heads=heads))
    return build_language_model(checkpoint, path).eval()


def test_vocabulary_and_tokens_equal_the_tokenizer(reference):
    assert reference["vocab"] == list(ESMC_ALPHABET.tokens)
    assert list(ESMC_ALPHABET.tokens[:31]) == list(ESM_ALPHABET.tokens[:31])  # all but <null_1> -> "|" at 31
    outputs = reference[MAIN]["outputs"]
    assert torch.equal(ESMC_ALPHABET.batch_encode(BATCH), outputs["tokens"])
    for sequence, tokens in zip(BATCH, outputs["single_tokens"], strict=False):
        assert torch.equal(ESMC_ALPHABET.batch_encode([sequence])[0], tokens)


@pytest.mark.parametrize("name", SIZES)
def test_every_layer_and_the_logits_equal_the_esm_package(reference, name):
    ours = load_ours(reference, name)
    assert isinstance(ours, ESMC)
    assert (ours.embed_dim, ours.attention_heads, ours.num_layers) == SIZES[name]
    expected = reference[name]["outputs"]
    layers = list(range(ours.num_layers + 1))
    before_norm = []
    hook = ours.layers[-1].register_forward_hook(lambda module, args, output: before_norm.append(output[0]))
    with torch.no_grad():
        got = ours(expected["tokens"], repr_layers=layers)
    hook.remove()
    assert sorted(got["representations"]) == layers
    torch.testing.assert_close(got["representations"][0], expected["embedded"], **TOL)
    for layer in layers[1:-1]:
        torch.testing.assert_close(got["representations"][layer], expected["hidden_states"][layer - 1], **TOL)
    torch.testing.assert_close(before_norm[0], expected["hidden_states"][-1], **TOL)
    torch.testing.assert_close(got["representations"][layers[-1]], expected["embeddings"], **TOL)
    assert got["logits"].shape[-1] == 64
    torch.testing.assert_close(got["logits"], expected["logits"], **TOL)


@pytest.mark.parametrize("name", SIZES)
def test_padded_batch_equals_single_runs(reference, name):
    ours = load_ours(reference, name)
    expected = reference[name]["outputs"]
    tokens = ESMC_ALPHABET.batch_encode(BATCH)
    with torch.no_grad():
        batch = ours(tokens, repr_layers=[0, 1, -1])
        for row, sequence in enumerate(BATCH):
            alone = ours(ESMC_ALPHABET.batch_encode([sequence]), repr_layers=[0, 1, -1])
            width = alone["logits"].shape[1]
            torch.testing.assert_close(batch["logits"][row, :width], alone["logits"][0], **TOL)
            torch.testing.assert_close(alone["logits"][0], expected["by_sequence"][sequence], **TOL)
            for layer in (0, 1, -1):
                got = batch["representations"][layer][row, :width]
                torch.testing.assert_close(got, alone["representations"][layer][0], **TOL)


def test_embed_equals_the_reference_per_residue(reference):
    ours = load_ours(reference, MAIN)
    expected = reference[MAIN]["outputs"]
    out = ours.embed(BATCH, layers=(0, -1), logits=True, max_tokens_per_batch=40)
    lengths = [len(ESMC_ALPHABET.encode(s)) for s in BATCH]
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out.representations[-1][i], expected["embeddings"][i, 1 : 1 + n], **TOL)
        torch.testing.assert_close(out.representations[0][i], expected["embedded"][i, 1 : 1 + n], **TOL)
        torch.testing.assert_close(out.cls[-1][i], expected["embeddings"][i, 0], **TOL)
        torch.testing.assert_close(out.logits[i], expected["logits"][i, 1 : 1 + n], **TOL)
    torch.testing.assert_close(out.mean[-1], torch.stack([r.mean(0) for r in out.representations[-1]]), **TOL)


def direct_score(by_sequence: dict, vocab: list[str], strategy: str, mutation: str) -> float:
    """Each strategy's definition written out on the reference's logits (log-softmax over all 64 outputs)."""
    index = {token: i for i, token in enumerate(vocab)}

    def log_probs(sequence):
        return torch.log_softmax(by_sequence[sequence].double(), dim=-1)

    changes = [(part[0], int(part[1:-1]) - 1, part[-1]) for part in mutation.upper().split(":")]
    mutant = mutant_of(WILD_TYPE, mutation)
    if strategy == "pseudo-ppl":
        sequences = (WILD_TYPE, mutant)
        pll = [sum(float(log_probs(masked(s, i))[i + 1, index[s[i]]]) for i in range(len(s))) for s in sequences]
        return pll[1] - pll[0]
    context = {"wt-marginals": WILD_TYPE, "mutant-marginals": mutant}.get(strategy)
    score = 0.0
    for wt, i, mt in changes:
        lp = log_probs(context if context is not None else masked(WILD_TYPE, i))
        score += float(lp[i + 1, index[mt]] - lp[i + 1, index[wt]])
    return score


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("budget", [None, 50])
def test_each_variant_strategy_equals_the_reference_written_out(reference, strategy, budget):
    ours = load_ours(reference, MAIN)
    by_sequence = reference[MAIN]["outputs"]["by_sequence"]
    want = [direct_score(by_sequence, reference["vocab"], strategy, m) for m in MUTATIONS]
    got = esmfold_lite.score_variants(ours, WILD_TYPE, MUTATIONS, strategy=strategy, max_tokens_per_batch=budget)
    assert got == pytest.approx(want, abs=1e-4)


def test_cli_embed_and_score_variants_on_the_official_file(reference, tmp_path):
    path = str(reference[MAIN]["path"])
    ours = load_ours(reference, MAIN)
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n>b\nMLVW\n")
    assert main(["embed", str(fasta), "-o", str(tmp_path / "emb"), "--model", path, "--logits", "--quiet"]) == 0
    expected = ours.embed(["MKTAYIAKQR", "MLVW"], layers=(-1,), logits=True)
    for i, name in enumerate(("a", "b")):
        saved = torch.load(tmp_path / "emb" / f"{name}.pt")
        torch.testing.assert_close(saved["representations"][ours.num_layers], expected.representations[-1][i], **TOL)
        torch.testing.assert_close(saved["logits"], expected.logits[i], **TOL)

    dms = tmp_path / "dms.csv"
    dms.write_text("mutant\n" + "\n".join(MUTATIONS) + "\n")
    out = tmp_path / "scores.csv"
    argv = ["score-variants", "--model", path, "--sequence", WILD_TYPE, "--dms-input", str(dms), "--dms-output"]
    assert main(argv + [str(out), "--scoring-strategy", "wt-marginals", "--quiet"]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    want = score_variants(ours, WILD_TYPE, MUTATIONS, strategy="wt-marginals")
    assert [float(row[1]) for row in rows[1:]] == pytest.approx(want, abs=1e-5)


# ---- without the reference ---------------------------------------------------------------------------------------


def write_official(model: ESMC, path: Path) -> Path:
    """``model`` as an official ESM C file: its state under the official names, ``torch.save``d bare."""
    torch.save(esmc_to_official_state_dict(model.state_dict()), path)
    return path


def test_registry_and_released_sizes():
    for name, file_stem, repo, kind_size in (
        ("esmc_300m", "esmc_300m_2024_12_v0", "esmc-300m-2024-12", (30, 960, 15, 2560)),
        ("esmc_600m", "esmc_600m_2024_12_v0", "esmc-600m-2024-12", (36, 1152, 18, 3072)),
    ):
        info = registry.get(name)
        assert info.kind == "esmc" and info.filename == f"{file_stem}.pth" and info.regression_url is None
        assert info.url == f"https://huggingface.co/EvolutionaryScale/{repo}/resolve/main/data/weights/{file_stem}.pth"
        config = ESMC_ARCHITECTURES[name]
        assert (config.num_layers, config.embed_dim, config.attention_heads, config.ffn_dim) == kind_size
        assert config.embed_dim // config.attention_heads == 64
        assert registry.lookup(file_stem) is info


def test_official_file_loads_with_its_config_from_the_shapes(tmp_path):
    model = random_esmc(128, 2, 3)
    path = write_official(model, tmp_path / "esmc_tiny.pth")
    checkpoint = read_language_model(path)
    assert checkpoint.kind == "esmc"
    sizes = {"num_layers": 3, "embed_dim": 128, "attention_heads": 2, "vocab_size": 64, "ffn_dim": 512}
    assert checkpoint.config == sizes
    loaded = load_language_model(path)
    tokens = ESMC_ALPHABET.batch_encode(BATCH)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens)["logits"], model(tokens)["logits"], rtol=0, atol=0)
    assert set(official_to_esmc_state_dict(esmc_to_official_state_dict(model.state_dict()))) == set(model.state_dict())


def test_convert_to_own_format_and_back(tmp_path):
    model = random_esmc(128, 2, 2)
    path = write_official(model, tmp_path / "esmc_tiny.pth")
    assert main(["weights", "convert", str(path), str(tmp_path / "own" / "esmc_tiny")]) == 0
    own = load_language_model(tmp_path / "own" / "esmc_tiny.safetensors")
    assert isinstance(own, ESMC) and own.config == model.config
    tokens = ESMC_ALPHABET.batch_encode(BATCH)
    with torch.no_grad():
        torch.testing.assert_close(own(tokens)["logits"], model(tokens)["logits"], rtol=0, atol=0)


def test_head_count_of_an_unreleased_width_must_be_given(tmp_path):
    path = write_official(random_esmc(96, 3, 2), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="width 96.*number of attention heads is unknown"):
        load_language_model(path)
    config, _ = read_official_esmc(path, attention_heads=3)
    assert config["attention_heads"] == 3


def test_contacts_are_a_clear_error():
    model = random_esmc(64, 4, 2)
    tokens = ESMC_ALPHABET.batch_encode(["MKTAYIAK"])
    message = r"ESMC \(ESM C\) has no contact head"
    with pytest.raises(ValueError, match=message):
        model(tokens, return_contacts=True)
    with pytest.raises(ValueError, match=message):
        model.predict_contacts(tokens)
    with pytest.raises(ValueError, match=message):
        model.embed(["MKTAYIAK"], contacts=True)
    with pytest.raises(ValueError, match=message):
        embed(model, ["MKTAYIAK"], contacts=True)


def test_embed_command_refuses_contacts_naming_the_model(tmp_path, capsys):
    path = write_official(random_esmc(128, 2, 2), tmp_path / "esmc_tiny.pth")
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAK\n")
    for flag in ("--contacts", "--contacts-png"):
        assert main(["embed", str(fasta), "-o", str(tmp_path / "out"), "--model", str(path), flag]) == 1
        assert "ESMC) has no contact head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_head_weights_leave_outputs_unchanged_and_skip_padding():
    model = random_esmc(64, 4, 2)
    tokens = ESMC_ALPHABET.batch_encode(BATCH)
    with torch.no_grad():
        plain = model(tokens, repr_layers=[1])
        weighted = model(tokens, repr_layers=[1], need_head_weights=True)
    torch.testing.assert_close(weighted["logits"], plain["logits"], **TOL)
    attentions = weighted["attentions"]
    assert attentions.shape == (len(BATCH), 2, 4, tokens.shape[1], tokens.shape[1])
    real = tokens.ne(ESMC_ALPHABET.padding_idx)
    sums = attentions.sum(-1)  # (B, layers, H, T)
    torch.testing.assert_close(sums[real[:, None, None].expand_as(sums)], torch.ones(int(real.sum()) * 8))
    assert not attentions[~real[:, None, None, :, None].expand_as(attentions)].any()


def test_alphabet_has_the_chain_break_and_no_length_limit():
    assert ESMC_ALPHABET.encode("A|<mask>c") == [5, 31, 32, 23]
    assert ESMC_ALPHABET.tok_to_idx["|"] == 31 and "<null_1>" not in ESMC_ALPHABET.tokens
    assert ESMC.max_residues is None and not ESMC.takes_msa
