"""ESMFold2's pair trunk (LM encoder, triangle updates, pair stacks, parcae, the loops, the distogram head) equals
transformers' on randomized weights (fp32, CPU).

The reference is a whole tiny ``EsmFold2Model`` (every parameter randomized by ``randomize_``); our ``PairTrunk``
loads its trunk keys strictly. The loops are driven by the reference's own code (``_init_pair_state``,
``parcae.discretize``, ``_run_trunk_loops``, ``parcae.decode_state``, ``distogram_head``, in ``forward``'s order) on
given inputs: the input embedder's pair representation and ESM C's hidden states are random tensors here. Both sides
draw the initial state and the per-loop LM dropout masks from the global generator after the same seed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from esmfold2_reference import tiny_reference_config
from randomize import randomize_
from transformers.models.esmfold2.modeling_esmfold2 import EsmFold2Model

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.pair_stack import PairUpdateStack, TriangleMultiplicativeUpdate
from esmfold_lite.esmfold2.trunk import PairTrunk

TOL = dict(atol=1e-5, rtol=1e-5)
PREFIXES = ("language_model.", "lm_encoder.", "folding_trunk.", "parcae.", "distogram_head.")
LENGTH = 7


@pytest.fixture(scope="module")
def models() -> tuple[EsmFold2Model, PairTrunk]:
    reference_config = tiny_reference_config()
    with torch.random.fork_rng(devices=[]):
        reference = randomize_(EsmFold2Model(reference_config), seed=3).eval()
    ours = PairTrunk(EsmFold2Config.from_dict(reference_config.to_dict())).eval()
    trunk_keys = {k: v for k, v in reference.state_dict().items() if k.startswith(PREFIXES)}
    ours.load_state_dict(trunk_keys, strict=True)
    return reference, ours


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    c_z = tiny_reference_config().pairwise_hidden_size
    esmc = tiny_reference_config().esmc_config
    attention_mask = torch.ones(2, LENGTH)
    attention_mask[1, LENGTH - 2 :] = 0  # the second record is right-padded
    z = torch.randn(2, LENGTH, LENGTH, c_z, generator=generator)
    lm = torch.randn(2, LENGTH, esmc.num_hidden_layers + 1, esmc.hidden_size, generator=generator)
    pair_mask = attention_mask[:, :, None] * attention_mask[:, None, :]
    return z, lm, attention_mask, pair_mask


def _reference_trunk(model: EsmFold2Model, z_init, lm_hidden, attention_mask, num_loops: int):
    """The trunk half of ``EsmFold2Model.forward``, through the reference's own methods."""
    lm_pair = model.language_model(lm_hidden)
    pair_mask = attention_mask[:, :, None].float() * attention_mask[:, None, :].float()
    state = model._init_pair_state(z_init)
    state_decay, input_matrix = model.parcae.discretize()
    state = model._run_trunk_loops(
        pair_states=state,
        initial_pair_states=z_init,
        lm_pair_states=lm_pair,
        msa_kwargs=None,
        pair_mask=pair_mask,
        state_decay=state_decay.view(1, 1, 1, -1),
        input_matrix=input_matrix,
        total_steps=max(1, num_loops + 1),
    )
    z = model.parcae.decode_state(state, pair_attention_mask=pair_mask).float()
    return z, model.distogram_head(z + z.transpose(-2, -3))


def test_no_zero_layer_left(models):
    _, ours = models
    """Every parameter drawn anew: no zero (and no identity, parcae's initialisation) left to hide a miswiring."""
    for name, p in ours.named_parameters():
        assert p.abs().min() > 0, name
        assert p.ndim != 2 or p.shape[0] != p.shape[1] or not torch.equal(p, torch.eye(len(p))), name


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplicative_update(models, outgoing, grad):
    reference, ours = models
    theirs_layer = reference.folding_trunk.layers[0]
    theirs = theirs_layer.tri_mul_out if outgoing else theirs_layer.tri_mul_in
    mine = ours.folding_trunk.layers[0].tri_mul_out if outgoing else ours.folding_trunk.layers[0].tri_mul_in
    assert isinstance(mine, TriangleMultiplicativeUpdate)
    z, _, _, pair_mask = _inputs()
    expected = z + theirs(z, visibility=pair_mask)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(mine(z.clone(), pair_mask), expected, **TOL)
        torch.testing.assert_close(mine(z.clone()), z + theirs(z), **TOL)  # no mask


@pytest.mark.parametrize("chunk_size", [None, 2, 64])
def test_pair_update_stack(models, chunk_size):
    """The folding trunk's stack; our chunking (rows per step) never changes the numbers."""
    reference, ours = models
    config = dataclasses.replace(ours.config, chunk_size=chunk_size)
    mine = PairUpdateStack(config, config.folding_trunk_num_hidden_layers)
    mine.load_state_dict(ours.folding_trunk.state_dict(), strict=True)
    z, _, _, pair_mask = _inputs(1)
    expected = reference.folding_trunk(z, pair_attention_mask=pair_mask)
    with torch.no_grad():
        torch.testing.assert_close(mine(z.clone(), pair_mask), expected, **TOL)


def test_language_model_encoder(models):
    reference, ours = models
    _, lm, _, _ = _inputs(2)
    torch.testing.assert_close(ours.language_model(lm), reference.language_model(lm), **TOL)


def test_parcae_step_and_decode(models):
    reference, ours = models
    z, _, _, pair_mask = _inputs(3)
    state, _, _, _ = _inputs(4)
    for a, b in zip(ours.parcae.discretize(), reference.parcae.discretize(), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    decay, matrix = reference.parcae.discretize()
    torch.testing.assert_close(
        ours.parcae(state, z, decay, matrix), reference.parcae(state, z, decay.view(1, 1, 1, -1), matrix), **TOL
    )
    expected = reference.parcae.decode_state(state, pair_attention_mask=pair_mask)
    with torch.no_grad():
        torch.testing.assert_close(ours.parcae.decode_state(state.clone(), pair_mask), expected, **TOL)


@pytest.mark.parametrize("num_loops", [0, 1, 2])
def test_trunk_after_each_loop(models, num_loops):
    """After num_loops loops (num_loops + 1 trunk passes): the decoded pair representation and the distogram logits,
    with the reference's random initial state and per-loop LM dropout drawn in its order after the same seed."""
    reference, ours = models
    z, lm, attention_mask, _ = _inputs(5)
    with torch.no_grad():
        torch.manual_seed(11)
        expected_z, expected_logits = _reference_trunk(reference, z, lm, attention_mask, num_loops)
        torch.manual_seed(11)
        out = ours(z, attention_mask, lm, num_loops=num_loops)
    torch.testing.assert_close(out.pair_states, expected_z, **TOL)
    torch.testing.assert_close(out.distogram_logits, expected_logits, **TOL)
    assert out.distogram_logits.shape == (2, LENGTH, LENGTH, ours.config.structure_head.num_distogram_bins)


def test_trunk_without_lm_and_without_dropout(models):
    """No ESM C states (no LM term), and a config without per-loop LM dropout (the LM pair is then used as is)."""
    reference, ours = models
    z, lm, attention_mask, _ = _inputs(6)
    with torch.no_grad():
        torch.manual_seed(12)
        state = reference._init_pair_state(z)
        decay, matrix = reference.parcae.discretize()
        pair_mask = attention_mask[:, :, None] * attention_mask[:, None, :]
        state = reference._run_trunk_loops(state, z, None, None, pair_mask, decay.view(1, 1, 1, -1), matrix, 2)
        expected = reference.parcae.decode_state(state, pair_attention_mask=pair_mask).float()
        torch.manual_seed(12)
        torch.testing.assert_close(ours(z, attention_mask, None, num_loops=1).pair_states, expected, **TOL)

        ours.config.lm_encoder.per_loop_lm_dropout = reference.config.lm_encoder.per_loop_lm_dropout = False
        try:
            torch.manual_seed(13)
            expected_z, _ = _reference_trunk(reference, z, lm, attention_mask, 1)
            torch.manual_seed(13)
            torch.testing.assert_close(ours(z, attention_mask, lm, num_loops=1).pair_states, expected_z, **TOL)
        finally:
            ours.config.lm_encoder.per_loop_lm_dropout = reference.config.lm_encoder.per_loop_lm_dropout = True
