"""Parity of the trunk's building blocks with transformers' ESMFold port (same math as fair-esm in fp32)."""

import pytest
import torch
from randomize import randomize_
from transformers.models.esm import modeling_esmfold as hf
from transformers.models.esm.configuration_esm import TrunkConfig as HFTrunkConfig

from esmfold_lite.fold.attention import SequenceAttention
from esmfold_lite.fold.triangle_attention import TriangleAttention
from esmfold_lite.fold.triangle_multiplication import TriangleMultiplication
from esmfold_lite.fold.trunk_block import SequenceToPair, TriangularSelfAttentionBlock

C_S, C_Z, SEQ_WIDTH, PAIR_WIDTH = 32, 16, 16, 8  # 2 sequence heads, 2 pair heads
TOL = 1e-5


def hf_config() -> HFTrunkConfig:
    return HFTrunkConfig(
        num_blocks=1,
        sequence_state_dim=C_S,
        pairwise_state_dim=C_Z,
        sequence_head_width=SEQ_WIDTH,
        pairwise_head_width=PAIR_WIDTH,
    )


def inputs(seed: int, batch: int = 2, length: int = 9):
    """Random s, z and a residue mask whose second sequence is padded after 5 residues."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, length, C_S, generator=g)
    z = torch.randn(batch, length, length, C_Z, generator=g)
    mask = torch.ones(batch, length)
    mask[1, 5:] = 0
    return s, z, mask


def copy_into(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Load the reference's weights; the key sets must match exactly."""
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplication_matches_transformers(outgoing):
    reference = hf.EsmFoldTriangleMultiplicativeUpdate(hf_config(), _outgoing=outgoing)
    randomize_(reference, 0)
    ours = TriangleMultiplication(C_Z, C_Z, outgoing=outgoing)
    copy_into(ours, reference)
    _, z, mask = inputs(1)
    pair_mask = mask[:, :, None] * mask[:, None, :]
    with torch.no_grad():  # ours returns z + update, added into its (here cloned) input
        assert max_diff(ours(z.clone(), pair_mask) - z, reference(z, mask=pair_mask)) <= TOL
        assert max_diff(ours(z.clone()) - z, reference(z)) <= TOL
        for chunk_size, blocks in ((1, 1), (2, 3), (4, 2), (3, 9)):
            assert max_diff(ours(z.clone(), pair_mask, chunk_size, blocks) - z, reference(z, mask=pair_mask)) <= TOL


@pytest.mark.parametrize("starting", [True, False])
def test_triangle_attention_matches_transformers(starting):
    reference = hf.EsmFoldTriangleAttention(C_Z, PAIR_WIDTH, C_Z // PAIR_WIDTH, starting=starting, inf=1e9)
    randomize_(reference, 2)
    ours = TriangleAttention(C_Z, PAIR_WIDTH, C_Z // PAIR_WIDTH, starting=starting)
    copy_into(ours, reference)
    _, z, mask = inputs(3)
    pair_mask = mask[:, :, None] * mask[:, None, :]
    with torch.no_grad():  # ours returns z + update, added into its (here cloned) input
        assert max_diff(ours(z.clone(), pair_mask) - z, reference(z, mask=pair_mask)) <= TOL
        expected = reference(z, mask=pair_mask, chunk_size=2)
        assert max_diff(ours(z.clone(), pair_mask, chunk_size=2) - z, expected) <= TOL
        assert max_diff(ours(z.clone()) - z, reference(z)) <= TOL


def test_sequence_attention_matches_transformers():
    reference = hf.EsmFoldSelfAttention(C_S, C_S // SEQ_WIDTH, SEQ_WIDTH, gated=True)
    randomize_(reference, 4)
    ours = SequenceAttention(C_S, C_S // SEQ_WIDTH, SEQ_WIDTH)
    copy_into(ours, reference)
    s, z, mask = inputs(5)
    bias = z[..., : C_S // SEQ_WIDTH]
    with torch.no_grad():
        assert max_diff(ours(s, mask, bias), reference(s, mask=mask, bias=bias)[0]) <= TOL
        assert max_diff(ours(s), reference(s)[0]) <= TOL


def test_sequence_to_pair_matches_transformers():
    reference = hf.EsmFoldSequenceToPair(C_S, C_Z // 2, C_Z)
    randomize_(reference, 6)
    ours = SequenceToPair(C_S, C_Z // 2, C_Z)
    copy_into(ours, reference)
    s, _, _ = inputs(7)
    with torch.no_grad():
        assert max_diff(ours(s), reference(s)) <= TOL


@pytest.mark.parametrize("seed", [8, 9])
def test_block_matches_transformers(seed):
    reference = hf.EsmFoldTriangularSelfAttentionBlock(hf_config()).eval()
    randomize_(reference, seed)
    ours = TriangularSelfAttentionBlock(C_S, C_Z, SEQ_WIDTH, PAIR_WIDTH).eval()
    copy_into(ours, reference)
    s, z, mask = inputs(seed + 100)
    with torch.no_grad():
        ref_s, ref_z = reference(s, z, mask=mask)
        for chunk_size, pair_blocks in ((None, 1), (4, 1), (2, 3)):  # the block consumes its z: give it a copy
            out_s, out_z = ours(s, z.clone(), mask=mask, chunk_size=chunk_size, pair_blocks=pair_blocks)
            assert max_diff(out_s, ref_s) <= TOL
            assert max_diff(out_z, ref_z) <= TOL
        ref_s, ref_z = reference(s, z)
        out_s, out_z = ours(s, z.clone())
        assert max_diff(out_s, ref_s) <= TOL
        assert max_diff(out_z, ref_z) <= TOL


def test_block_gradients_match_transformers():
    reference = hf.EsmFoldTriangularSelfAttentionBlock(hf_config()).eval()
    randomize_(reference, 10)
    ours = TriangularSelfAttentionBlock(C_S, C_Z, SEQ_WIDTH, PAIR_WIDTH).eval()
    copy_into(ours, reference)
    s, z, mask = inputs(11, length=6)

    def grads(module, **kwargs):
        module.zero_grad()
        out_s, out_z = module(s, z, mask=mask, **kwargs)
        (out_s.square().mean() + out_z.square().mean()).backward()
        return {name: p.grad.clone() for name, p in module.named_parameters()}

    expected = grads(reference)
    for chunk_size in (None, 2):
        actual = grads(ours, chunk_size=chunk_size)
        for name, grad in expected.items():
            torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_block_dropout_shares_masks_in_training():
    block = TriangularSelfAttentionBlock(C_S, C_Z, SEQ_WIDTH, PAIR_WIDTH, dropout=0.25).train()
    x = torch.ones(2, 5, 5, 3)
    torch.manual_seed(0)
    rows = block.row_drop(x)  # one mask per (batch, row i), shared along j
    cols = block.col_drop(x)  # one mask per (batch, column j), shared along i
    assert torch.equal(rows, rows[:, :, :1].expand_as(rows))
    assert torch.equal(cols, cols[:, :1].expand_as(cols))
    assert (rows == 0).any() and (rows == 2).any()
    block.eval()
    assert block.row_drop(x) is x


def test_block_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="multiple"):
        TriangularSelfAttentionBlock(30, 16, 16, 8)
