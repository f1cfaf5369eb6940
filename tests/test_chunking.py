"""chunk_apply itself, and chunk-size invariance of every chunked trunk module."""

import pytest
import torch
from randomize import randomize_

from esmfold_lite.fold.attention import SequenceAttention
from esmfold_lite.fold.chunking import chunk_apply, product_tile
from esmfold_lite.fold.triangle_attention import TriangleAttention
from esmfold_lite.fold.triangle_multiplication import TriangleMultiplication
from esmfold_lite.fold.trunk_block import SharedDropout, TriangularSelfAttentionBlock

CHUNK_SIZES = [None, 1, 3, 16]


def padded_inputs(seed: int, batch: int = 2, length: int = 7, c_s: int = 32, c_z: int = 16):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, length, c_s, generator=g)
    z = torch.randn(batch, length, length, c_z, generator=g)
    mask = torch.ones(batch, length)
    mask[1, 4:] = 0
    return s, z, mask


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 6, 100])
def test_chunk_apply_matches_whole_call(chunk_size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g)
    y = torch.randn(2, 5, generator=g)  # sliced along dim 1 as well
    w = torch.randn(4, 4, generator=g)

    def fn(x_part, y_part):  # (3, r, 4), (2, r) -> (r, 2, 3, 4)
        return torch.einsum("arc,cd,br->rbad", x_part, w, y_part)

    whole = fn(x, y)
    chunked = chunk_apply(fn, (x, y), (1, -1), chunk_size, out_dim=0)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_chunk_apply_none_calls_once_without_copy():
    x = torch.randn(4, 3)
    assert chunk_apply(lambda t: t, (x,), (0,), None, out_dim=0) is x
    assert chunk_apply(lambda t: t, (x,), (0,), 4, out_dim=0) is x


def test_chunk_apply_backpropagates_like_the_whole_call():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, requires_grad=True)
    w = torch.randn(3, 3, generator=g, requires_grad=True)
    grads = []
    for chunk_size in (None, 4):
        x.grad = w.grad = None
        chunk_apply(lambda t: torch.tanh(t @ w), (x,), (0,), chunk_size, out_dim=0).pow(2).sum().backward()
        grads.append((x.grad.clone(), w.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_chunk_apply_rejects_bad_arguments():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_apply(lambda t: t, (x,), (0,), 0, out_dim=0)
    with pytest.raises(ValueError, match="disagree"):
        chunk_apply(lambda a, b: a, (x, torch.zeros(5)), (0, 0), 2, out_dim=0)
    with pytest.raises(ValueError, match="one dim per input"):
        chunk_apply(lambda t: t, (x,), (0, 1), 2, out_dim=0)


def _assert_chunk_invariant(run, atol):
    """run(chunk_size) -> tensor or tuple of tensors; all chunk sizes must agree with chunk_size=None."""

    def as_tuple(out):
        return out if isinstance(out, tuple) else (out,)

    with torch.no_grad():
        reference = as_tuple(run(None))
        for chunk_size in CHUNK_SIZES[1:]:
            for a, b in zip(as_tuple(run(chunk_size)), reference, strict=True):
                assert (a - b).abs().max().item() <= atol, f"chunk_size={chunk_size}"


@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplication_chunk_invariant(outgoing):
    module = TriangleMultiplication(16, 16, outgoing=outgoing)
    randomize_(module, 2)
    _, z, mask = padded_inputs(3)
    pair_mask = mask[:, :, None] * mask[:, None, :]
    _assert_chunk_invariant(lambda c: module(z.clone(), pair_mask, c), 1e-5)  # updates its input: give it a copy
    for blocks in (2, 3, 7):
        _assert_chunk_invariant(lambda c, blocks=blocks: module(z.clone(), pair_mask, c, blocks), 1e-5)


@pytest.mark.parametrize("starting", [True, False])
def test_triangle_attention_chunk_invariant(starting):
    module = TriangleAttention(16, 8, 2, starting=starting)
    randomize_(module, 4)
    _, z, mask = padded_inputs(5)
    pair_mask = mask[:, :, None] * mask[:, None, :]
    _assert_chunk_invariant(lambda c: module(z.clone(), pair_mask, c), 1e-5)


def test_sequence_attention_chunk_invariant():
    module = SequenceAttention(32, 2, 16)
    randomize_(module, 6)
    s, z, mask = padded_inputs(7)
    bias = z[..., :2]
    _assert_chunk_invariant(lambda c: module(s, mask, bias, c), 1e-5)


def test_block_chunk_invariant():
    block = TriangularSelfAttentionBlock(32, 16, 16, 8).eval()
    randomize_(block, 8)
    s, z, mask = padded_inputs(9)
    _assert_chunk_invariant(lambda c: block(s, z.clone(), mask, c), 1e-5)
    _assert_chunk_invariant(lambda c: block(s, z.clone(), mask, c, pair_blocks=3), 1e-5)


def test_product_tile_covers_a_chunk_of_rows_in_a_square():
    assert product_tile(512, None) == 512 and product_tile(512, 512) == 512 and product_tile(7, 100) == 7
    for length, chunk in [(512, 32), (1024, 16), (2000, 8), (7, 1), (7, 3), (300, 299)]:
        side = product_tile(length, chunk)
        assert chunk <= side <= length
        assert side * side <= max(chunk * length, chunk * chunk)  # no more positions than a chunk of rows


@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplication_shared_dropout_sees_whole_rows(outgoing):
    """In training without autograd the update runs in whole rows, so a row (column) dropout mask is shared along
    every row (column) of the pair representation, not drawn again per product tile."""
    module = TriangleMultiplication(16, 16, outgoing=outgoing)
    randomize_(module, 6)
    _, z, _ = padded_inputs(7, length=9)
    shared_dim = 2 if outgoing else 1
    dropout = SharedDropout(0.5, shared_dim=shared_dim).train()
    torch.manual_seed(0)
    with torch.no_grad():
        delta = module(z.clone(), None, 1, dropout=dropout) - z
    dropped = delta.abs() < 1e-12  # (B, I, J, c_z)
    assert dropped.any() and not dropped.all()
    assert (dropped.all(dim=shared_dim) == dropped.any(dim=shared_dim)).all()
