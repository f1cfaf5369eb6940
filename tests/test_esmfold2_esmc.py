"""The ESM C inside ESMFold2: transformers' ``EsmcModel`` equals our ``ESMC`` once its state dict is renamed
(``weights.esmc_format.transformers_to_esmc_state_dict``), and our ``esmc_hidden_states`` equals the reference's
``EsmFold2Model._compute_lm_hidden_states`` (fp32, CPU, every parameter randomized).

Every layer's hidden state is compared (index 0: the embeddings; the last: after the final LayerNorm, on both
sides), for one chain, two chains (chain-aware attention: transformers' ``sequence_id``) and a right-padded batch
(the reference masks padded keys only, ours pads among pads: the real positions, the only ones compared, agree).
"""

from __future__ import annotations

import pytest
import torch
from esmfold2_reference import tiny_reference_config
from randomize import randomize_
from transformers import EsmcConfig, EsmcModel
from transformers.models.esmfold2.modeling_esmfold2 import EsmFold2Model

from esmfold_lite.esmfold2.esmc_states import esmc_hidden_states
from esmfold_lite.lm.esmc import ESMC, ESMCConfig
from esmfold_lite.weights.esmc_format import (
    esmc_config_from_transformers,
    esmc_to_transformers_state_dict,
    transformers_to_esmc_state_dict,
)
from esmfold_lite.weights.safe_pickle import CheckpointError

TOL = dict(atol=1e-5, rtol=1e-5)
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48, vocab_size=64)


def _ours_from(reference_config: EsmcConfig, state: dict[str, torch.Tensor]) -> ESMC:
    ours = ESMC(ESMCConfig(**esmc_config_from_transformers(reference_config.to_dict()))).eval()
    ours.load_state_dict(transformers_to_esmc_state_dict(state), strict=True)
    return ours


@pytest.fixture(scope="module")
def models() -> tuple[EsmcModel, ESMC]:
    config = EsmcConfig(**SIZES)
    with torch.random.fork_rng(devices=[]):
        reference = randomize_(EsmcModel(config), seed=5).eval()
    return reference, _ours_from(config, reference.state_dict())


def _tokens(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """``<cls> residues <eos>`` rows, right-padded; residue ids 4..23."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths) + 2
    tokens = torch.full((len(lengths), width), 1, dtype=torch.long)
    for row, length in enumerate(lengths):
        residues = torch.randint(4, 24, (length,), generator=generator)
        tokens[row, : length + 2] = torch.cat([torch.tensor([0]), residues, torch.tensor([2])])
    return tokens


def _compare(reference_states: tuple[torch.Tensor, ...], ours: dict, keep: torch.Tensor) -> None:
    assert len(reference_states) == len(ours["representations"])
    for layer, expected in enumerate(reference_states):
        torch.testing.assert_close(ours["representations"][layer][keep], expected[keep], **TOL)


def test_one_chain_every_layer(models):
    reference, ours = models
    tokens = _tokens([11])
    with torch.no_grad():
        expected = reference(input_ids=tokens, output_hidden_states=True)
        got = ours(tokens, repr_layers=range(ours.num_layers + 1))
    assert "logits" not in got  # EsmcModel has no sequence head, nor has ours here
    torch.testing.assert_close(got["representations"][ours.num_layers], expected.last_hidden_state, **TOL)
    _compare(expected.hidden_states, got, torch.ones_like(tokens, dtype=torch.bool))


def test_two_chains_attend_within_their_chain(models):
    reference, ours = models
    tokens = torch.cat([_tokens([6], seed=1), _tokens([4], seed=2)], dim=1)  # <cls> A <eos> <cls> B <eos>
    sequence_id = torch.tensor([[0] * 8 + [1] * 6])
    with torch.no_grad():
        expected = reference(input_ids=tokens, sequence_id=sequence_id, output_hidden_states=True)
        got = ours(tokens, repr_layers=range(ours.num_layers + 1), sequence_id=sequence_id)
        unmasked = ours(tokens, repr_layers=[1])
    _compare(expected.hidden_states, got, torch.ones_like(tokens, dtype=torch.bool))
    assert not torch.allclose(unmasked["representations"][1], got["representations"][1], **TOL)


def test_padded_batch(models):
    reference, ours = models
    tokens = _tokens([12, 5, 9], seed=3)
    keep = tokens.ne(1)
    with torch.no_grad():
        expected = reference(input_ids=tokens, attention_mask=keep, output_hidden_states=True)
        got = ours(tokens, repr_layers=range(ours.num_layers + 1))
        padded_chains = ours(tokens, repr_layers=range(ours.num_layers + 1), sequence_id=keep.long() - 1 + keep)
    _compare(expected.hidden_states, got, keep)
    _compare(expected.hidden_states, padded_chains, keep)


def test_state_dict_round_trip(models):
    reference, ours = models
    back = esmc_to_transformers_state_dict(ours.state_dict())
    assert back.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(back[key], value), key


def test_missing_part_is_reported_by_a_strict_load(models):
    reference, ours = models
    state = {k: v for k, v in reference.state_dict().items() if k != "layers.1.self_attn.k_proj.weight"}
    with pytest.raises(RuntimeError, match=r"layers\.1\.attention\.qkv\.weight"):
        ESMC(ours.config).load_state_dict(transformers_to_esmc_state_dict(state), strict=True)


@pytest.mark.parametrize(
    "change, word",
    [
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(attention_bias=True), "attention_bias"),
        (dict(head_dim=8), "head_dim"),
        (dict(rope_parameters={"rope_theta": 500.0, "rope_type": "default"}), "rope_parameters"),
    ],
)
def test_config_refuses_what_esmc_lacks(change, word):
    config = EsmcConfig(**SIZES).to_dict() | change
    with pytest.raises(CheckpointError, match=word):
        esmc_config_from_transformers(config, "esmc_config")


def _fold_inputs() -> dict[str, torch.Tensor]:
    """Two records: chains with asym ids 2 then 1 (the LM orders them 1, 2) and one shorter padded chain."""
    generator = torch.Generator().manual_seed(7)
    num_tokens = 10
    asym_id = torch.tensor([[2] * 4 + [1] * 6, [1] * 7 + [0] * 3])
    residue_index = torch.tensor([list(range(4)) + list(range(6)), list(range(7)) + [0] * 3])
    attention_mask = torch.ones(2, num_tokens, dtype=torch.bool)
    attention_mask[1, 7:] = False
    return dict(
        input_ids=torch.randint(4, 24, (2, num_tokens), generator=generator),
        asym_id=asym_id,
        residue_index=residue_index,
        mol_type=torch.zeros(2, num_tokens, dtype=torch.long),
        attention_mask=attention_mask,
    )


@pytest.mark.parametrize("rows", [[0, 1], [1]], ids=["two_chains_and_padding", "one_chain"])
def test_hidden_states_equal_the_reference(rows):
    reference_config = tiny_reference_config()
    with torch.random.fork_rng(devices=[]):
        reference = EsmFold2Model(reference_config).eval()
        randomize_(reference.esmc, seed=11)
    esmc_state = {k.removeprefix("esmc."): v for k, v in reference.state_dict().items() if k.startswith("esmc.")}
    ours = _ours_from(reference_config.esmc_config, esmc_state)
    inputs = {name: value[rows] for name, value in _fold_inputs().items()}
    expected = reference._compute_lm_hidden_states(**inputs)
    got = esmc_hidden_states(ours, **inputs)
    assert got.shape == expected.shape == (len(rows), 10, 4, 20)
    torch.testing.assert_close(got, expected, **TOL)


def test_refuses_non_protein_and_modified_residues(models):
    _, ours = models
    inputs = _fold_inputs()
    with pytest.raises(ValueError, match="protein chains only"):
        esmc_hidden_states(ours, **(inputs | {"mol_type": inputs["mol_type"].clone().fill_(1)}))
    residue_index = inputs["residue_index"].clone()
    residue_index[0, 1] = 0  # two tokens of residue 0 of chain 2
    with pytest.raises(ValueError, match="modified residue"):
        esmc_hidden_states(ours, **(inputs | {"residue_index": residue_index}))
