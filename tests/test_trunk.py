"""Parity of the whole folding trunk (blocks, recycling, structure module) with transformers' EsmFoldingTrunk."""

import pytest
import torch
from randomize import randomize_
from transformers.models.esm import modeling_esmfold as hf
from transformers.models.esm.configuration_esm import TrunkConfig as HFTrunkConfig

from esmfold_lite import fold_progress
from esmfold_lite.fold.config import StructureModuleConfig, TrunkConfig
from esmfold_lite.fold.trunk import FoldingTrunk, RelativePosition, pseudo_beta_distogram
from esmfold_lite.fold_progress import TRUNK_BLOCK, FoldStep, on_fold_step

TRUNK = dict(num_blocks=2, sequence_state_dim=32, pairwise_state_dim=16, sequence_head_width=16, pairwise_head_width=8)
STRUCTURE = StructureModuleConfig(
    c_s=24, c_z=8, c_ipa=8, c_resnet=8, no_heads_ipa=2, no_qk_points=2, no_v_points=3, no_blocks=2
)
HF_STRUCTURE = dict(
    sequence_dim=24, pairwise_dim=8, ipa_dim=8, resnet_dim=8, num_heads_ipa=2, num_qk_points=2, num_v_points=3,
    num_blocks=2,
)  # fmt: skip
MAX_RECYCLES = 4


@pytest.fixture(scope="module")
def trunks():
    reference = hf.EsmFoldingTrunk(
        HFTrunkConfig(**TRUNK, max_recycles=MAX_RECYCLES, chunk_size=None, structure_module=HF_STRUCTURE)
    ).eval()
    randomize_(reference, 0)
    ours = FoldingTrunk(TrunkConfig(**TRUNK, max_recycles=MAX_RECYCLES, structure_module=STRUCTURE)).eval()
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def inputs(seed: int, batch: int = 2, length: int = 10):
    """seq_feats, pair_feats, true_aa, residx (second chain offset as in multimer input), mask (one padded row)."""
    g = torch.Generator().manual_seed(seed)
    seq_feats = torch.randn(batch, length, TRUNK["sequence_state_dim"], generator=g)
    pair_feats = torch.randn(batch, length, length, TRUNK["pairwise_state_dim"], generator=g)
    true_aa = torch.randint(0, 21, (batch, length), generator=g)
    residx = torch.arange(length).repeat(batch, 1)
    residx[0, 6:] += 512
    mask = torch.ones(batch, length)
    mask[1, 7:] = 0
    return seq_feats, pair_feats, true_aa, residx, mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("no_recycles", [0, 3])
def test_trunk_matches_transformers(trunks, no_recycles):
    reference, ours = trunks
    args = inputs(1)
    with torch.no_grad():
        expected = reference(*args, no_recycles=no_recycles)
        for chunk_size in (None, 3):
            actual = ours(*args, no_recycles=no_recycles, chunk_size=chunk_size)
            assert max_diff(actual["s_s"], expected["s_s"]) <= 1e-4
            assert max_diff(actual["s_z"], expected["s_z"]) <= 1e-4
            assert max_diff(actual["positions"], expected["positions"]) <= 1e-4


def test_recycling_semantics(trunks):
    """None runs cfg.max_recycles passes (= no_recycles max_recycles - 1); every recycle changes the result."""
    _, ours = trunks
    args = inputs(2, length=8)
    with torch.no_grad():
        default = ours(*args)["positions"]
        same = ours(*args, no_recycles=MAX_RECYCLES - 1)["positions"]
        fewer = ours(*args, no_recycles=MAX_RECYCLES - 2)["positions"]
    torch.testing.assert_close(default, same, rtol=0, atol=0)
    assert max_diff(default, fewer) > 1e-3
    with pytest.raises(ValueError, match="no_recycles"):
        ours(*args, no_recycles=-1)


def test_every_block_that_ends_is_told_to_the_listener_and_only_within_its_context(trunks):
    _, ours = trunks
    args = inputs(4, length=6)
    heard = []
    with torch.no_grad():
        with on_fold_step(heard.append):
            ours(*args, no_recycles=2)
            ours(*args)
        ours(*args, no_recycles=0)
    blocks = TRUNK["num_blocks"]
    expected = [(p, b, 3) for p in range(1, 4) for b in range(1, blocks + 1)]
    expected += [(p, b, MAX_RECYCLES) for p in range(1, MAX_RECYCLES + 1) for b in range(1, blocks + 1)]
    assert heard == [FoldStep(TRUNK_BLOCK, b, blocks, p, passes) for p, b, passes in expected]


def test_without_a_listener_a_step_builds_and_calls_nothing(trunks, monkeypatch):
    """The listener-free path: one context-variable lookup per block, no step object, no call."""
    _, ours = trunks

    def never(*args):
        raise AssertionError("a step was reported with no listener installed")

    monkeypatch.setattr(fold_progress, "FoldStep", never)
    with torch.no_grad():
        ours(*inputs(5, length=6), no_recycles=1)


def test_only_the_last_pass_is_differentiated(trunks):
    reference, ours = trunks
    args = inputs(3, length=6)
    grads = []
    for model in (reference, ours):
        model.zero_grad()
        out = model(*args, no_recycles=1)
        (out["positions"][-1].square().mean() + out["s_z"].square().mean()).backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
        model.zero_grad()
    expected, actual = grads
    for name, grad in expected.items():
        if grad is None:
            assert actual[name] is None, name
        else:
            torch.testing.assert_close(actual[name], grad, rtol=1e-3, atol=1e-4, msg=name)


def test_relative_position_matches_transformers():
    bins, c_z = 4, 8
    reference = hf.EsmFoldRelativePosition(
        HFTrunkConfig(position_bins=bins, pairwise_state_dim=c_z, pairwise_head_width=4)
    )
    randomize_(reference, 4)
    ours = RelativePosition(bins, c_z)
    ours.load_state_dict(reference.state_dict(), strict=True)
    _, _, _, residx, mask = inputs(5)
    torch.testing.assert_close(ours(residx, mask), reference(residx, mask=mask), rtol=0, atol=0)
    torch.testing.assert_close(ours(residx), reference(residx), rtol=0, atol=0)


def test_pseudo_beta_distogram_matches_transformers():
    g = torch.Generator().manual_seed(6)
    backbone = 8 * torch.randn(2, 12, 3, 3, generator=g)
    expected = hf.EsmFoldingTrunk.distogram(backbone, 3.375, 21.375, 15)
    actual = pseudo_beta_distogram(backbone)
    assert actual.dtype == torch.long
    assert torch.equal(actual, expected)
    assert actual.min() == 0 and actual.max() == 14
