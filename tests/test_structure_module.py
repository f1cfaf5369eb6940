"""StructureModule equals transformers' EsmFoldStructureModule with every parameter randomized."""


import pytest
import torch
from randomize import randomize_
from transformers.models.esm.configuration_esm import StructureModuleConfig as HFStructureModuleConfig
from transformers.models.esm.modeling_esmfold import EsmFoldStructureModule

from esmfold_lite.fold.config import StructureModuleConfig
from esmfold_lite.fold.structure_module import StructureModule
from esmfold_lite.geometry.atoms import atom14_to_atom37, atom37_mask

SIZES = dict(c_s=32, c_z=16, c_ipa=8, c_resnet=24, no_heads_ipa=3, no_qk_points=4, no_v_points=5, no_blocks=3)
OUTPUT_KEYS = {"frames", "sidechain_frames", "unnormalized_angles", "angles", "positions", "states", "single"}


def hf_config(dropout_rate):
    return HFStructureModuleConfig(
        sequence_dim=SIZES["c_s"],
        pairwise_dim=SIZES["c_z"],
        ipa_dim=SIZES["c_ipa"],
        resnet_dim=SIZES["c_resnet"],
        num_heads_ipa=SIZES["no_heads_ipa"],
        num_qk_points=SIZES["no_qk_points"],
        num_v_points=SIZES["no_v_points"],
        num_blocks=SIZES["no_blocks"],
        dropout_rate=dropout_rate,
    )


def make_pair(seed, dropout_rate=0.1):
    torch.manual_seed(seed)
    theirs = EsmFoldStructureModule(hf_config(dropout_rate)).eval()
    randomize_(theirs, seed)
    ours = StructureModule(StructureModuleConfig(**SIZES, dropout_rate=dropout_rate)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def make_inputs(seed, batch=2, length=13):
    g = torch.Generator().manual_seed(seed)
    single = torch.randn(batch, length, SIZES["c_s"], generator=g)
    pair = torch.randn(batch, length, length, SIZES["c_z"], generator=g)
    aatype = torch.randint(0, 21, (batch, length), generator=g)
    aatype[0, -1] = 20  # X
    mask = torch.ones(batch, length)
    mask[1, 9:] = 0
    return {"single": single, "pair": pair}, aatype, mask


def test_state_dict_keys_equal_transformers():
    ours = StructureModule(StructureModuleConfig(**SIZES))
    theirs = EsmFoldStructureModule(hf_config(0.1))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape, key


@pytest.mark.parametrize("seed", [0, 1])
def test_outputs_match_transformers(seed):
    ours, theirs = make_pair(seed)
    evo, aatype, mask = make_inputs(seed)
    with torch.no_grad():
        expected = theirs(dict(evo), aatype, mask)
        got = ours(dict(evo), aatype, mask)
    assert set(got) == OUTPUT_KEYS and set(expected) == OUTPUT_KEYS
    for key in OUTPUT_KEYS:
        assert got[key].shape == expected[key].shape, key
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=0, msg=key)
    assert got["positions"].shape == (SIZES["no_blocks"], 2, 13, 14, 3)
    assert got["positions"][-1].abs().max() > 5  # non-trivial structures, in Å


def test_chunked_ipa_gives_the_same_result():
    ours, _ = make_pair(2)
    evo, aatype, mask = make_inputs(2)
    with torch.no_grad():
        full = ours(evo, aatype, mask)
        for chunk_size in (1, 4, 100):
            chunked = ours(evo, aatype, mask, chunk_size=chunk_size)
            for key in OUTPUT_KEYS:
                torch.testing.assert_close(chunked[key], full[key], atol=1e-4, rtol=0, msg=key)  # fp32 noise, Å scale


def test_gradients_match_transformers():
    ours, theirs = make_pair(3, dropout_rate=0.0)
    ours.train()
    theirs.train()
    evo, aatype, mask = make_inputs(3)
    weights = torch.randn(SIZES["no_blocks"], 2, 13, 14, 3, generator=torch.Generator().manual_seed(0))
    for module in (ours, theirs):
        out = module(dict(evo), aatype, mask)
        ((out["positions"] * weights).sum() + out["angles"].sum()).backward()
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = theirs_grads[name].grad
        torch.testing.assert_close(p.grad, ref, atol=1e-3 * (1 + ref.abs().max().item()), rtol=1e-3, msg=name)


def test_padding_does_not_reach_real_residues():
    ours, _ = make_pair(4)
    evo, aatype, mask = make_inputs(4)
    changed = {k: v.clone() for k, v in evo.items()}
    changed["single"][1, 9:] = torch.randn_like(changed["single"][1, 9:])
    changed["pair"][1, 9:] = 5.0
    changed["pair"][1, :, 9:] = -5.0
    with torch.no_grad():
        a = ours(evo, aatype, mask)
        b = ours(changed, aatype, mask)
    torch.testing.assert_close(a["positions"][:, :, :9], b["positions"][:, :, :9], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["states"][:, 0], b["states"][:, 0], atol=1e-5, rtol=0)


def test_bfloat16_runs_with_fp32_geometry():
    ours, _ = make_pair(5)
    evo, aatype, mask = make_inputs(5)
    with torch.no_grad():
        full = ours(evo, aatype, mask)
        half = ours.to(torch.bfloat16)({k: v.bfloat16() for k, v in evo.items()}, aatype, mask)
    assert half["positions"].dtype == torch.float32 and half["frames"].dtype == torch.float32
    assert half["states"].dtype == torch.bfloat16
    assert (half["positions"] - full["positions"]).abs().max() < 2.0


def test_atom37_from_structure_output():
    ours, _ = make_pair(6)
    evo, aatype, mask = make_inputs(6)
    with torch.no_grad():
        out = ours(evo, aatype, mask)
    positions = atom14_to_atom37(out["positions"][-1], aatype, mask)
    atom_mask = atom37_mask(aatype, mask)
    assert positions.shape == (2, 13, 37, 3) and atom_mask.shape == (2, 13, 37)
    assert not positions[atom_mask == 0].any()
    torch.testing.assert_close(positions[..., 1, :], out["positions"][-1][..., 1, :] * atom_mask[..., 1:2])  # CA
    # CA of every real, known residue sits at its backbone frame's translation.
    keep = mask.bool() & (aatype != 20)
    torch.testing.assert_close(positions[..., 1, :][keep], out["frames"][-1][..., 4:][keep], atol=1e-4, rtol=0)
    assert not positions[aatype == 20].any()
