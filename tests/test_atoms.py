"""Torsions → frames → atom14 → atom37 equal openfold's feats/data_transforms, and give the asked-for torsions."""

import math

import pytest
import torch
from transformers.models.esm.openfold_utils import data_transforms, feats
from transformers.models.esm.openfold_utils import residue_constants as ref_rc
from transformers.models.esm.openfold_utils import rigid_utils as ref

from esmfold_lite.geometry import residue_constants as rc
from esmfold_lite.geometry.atoms import (
    atom14_mask,
    atom14_to_atom37,
    atom37_mask,
    frames_to_atom14_positions,
    torsion_angles_to_frames,
)
from esmfold_lite.geometry.rigid import Rigid, quat_to_rot


def random_inputs(seed, batch=2, length=23):
    g = torch.Generator().manual_seed(seed)
    aatype = torch.randint(0, 21, (batch, length), generator=g)
    aatype[0, :21] = torch.arange(21)  # every residue type, X included
    q = torch.nn.functional.normalize(torch.randn(batch, length, 4, generator=g), dim=-1)
    backbone = Rigid(quat_to_rot(q), 10 * torch.randn(batch, length, 3, generator=g))
    angles = torch.nn.functional.normalize(torch.randn(batch, length, 7, 2, generator=g), dim=-1)
    return aatype, backbone, angles


def reference_frames_and_atoms(backbone, angles, aatype):
    r = ref.Rigid(ref.Rotation(rot_mats=backbone.rot), backbone.trans)
    default = torch.tensor(ref_rc.restype_rigid_group_default_frame)
    frames = feats.torsion_angles_to_frames(r, angles, aatype, default)
    positions = feats.frames_and_literature_positions_to_atom14_pos(
        frames,
        aatype,
        default,
        torch.tensor(ref_rc.restype_atom14_to_rigid_group),
        torch.tensor(ref_rc.restype_atom14_mask),
        torch.tensor(ref_rc.restype_atom14_rigid_group_positions),
    )
    return frames.to_tensor_4x4(), positions


@pytest.mark.parametrize("seed", [0, 1])
def test_frames_and_atom14_match_reference(seed):
    aatype, backbone, angles = random_inputs(seed)
    frames = torsion_angles_to_frames(backbone, angles, aatype)
    positions = frames_to_atom14_positions(frames, aatype)
    ref_frames, ref_positions = reference_frames_and_atoms(backbone, angles, aatype)
    assert frames.shape == (2, 23, 8) and positions.shape == (2, 23, 14, 3)
    torch.testing.assert_close(frames.to_tensor_4x4(), ref_frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(positions, ref_positions, atol=1e-5, rtol=0)


def test_atom37_matches_reference():
    aatype, backbone, angles = random_inputs(2)
    positions = frames_to_atom14_positions(torsion_angles_to_frames(backbone, angles, aatype), aatype)
    batch = data_transforms.make_atom14_masks({"aatype": aatype})
    torch.testing.assert_close(atom14_to_atom37(positions, aatype), feats.atom14_to_atom37(positions, batch))
    torch.testing.assert_close(atom37_mask(aatype), batch["atom37_atom_exists"])
    torch.testing.assert_close(atom14_mask(aatype), batch["atom14_atom_exists"])
    # Residue mask and other feature shapes.
    mask = torch.ones(2, 23)
    mask[1, 15:] = 0
    per_atom = torch.randn(2, 23, 14)
    expected = feats.atom14_to_atom37(per_atom[..., None], batch)[..., 0] * mask[..., None]
    torch.testing.assert_close(atom14_to_atom37(per_atom, aatype, mask), expected)
    torch.testing.assert_close(atom37_mask(aatype, mask), batch["atom37_atom_exists"] * mask[..., None])


def dihedral(p0, p1, p2, p3):
    b1 = torch.nn.functional.normalize(p2 - p1, dim=-1)
    v = (p0 - p1) - ((p0 - p1) * b1).sum(-1, keepdim=True) * b1
    w = (p3 - p2) - ((p3 - p2) * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.linalg.cross(b1, v, dim=-1) * w).sum(-1), (v * w).sum(-1))


def angle_diff(a, b):
    return (a - b + math.pi) % (2 * math.pi) - math.pi


def test_atoms_realise_the_requested_torsions():
    """Independent check: the chi dihedrals of the built atoms equal the input chi angles; O sits at psi + pi."""
    g = torch.Generator().manual_seed(3)
    aatype = torch.arange(20)
    theta = (2 * torch.rand(20, 7, generator=g, dtype=torch.float64) - 1) * math.pi
    angles = torch.stack([theta.sin(), theta.cos()], dim=-1)
    positions = frames_to_atom14_positions(
        torsion_angles_to_frames(Rigid.identity((20,), dtype=torch.float64), angles, aatype), aatype
    ).double()
    for i, letter in enumerate(rc.restypes):
        name = rc.restype_1to3[letter]
        slots = rc.restype_name_to_atom14_names[name]

        def atom(a, i=i, slots=slots):
            return positions[i, slots.index(a)]

        for k, quad in enumerate(rc.chi_angles_atoms[name]):
            assert abs(angle_diff(dihedral(*map(atom, quad)), theta[i, 3 + k])) < 1e-4, (name, k)
        assert abs(angle_diff(dihedral(*map(atom, ["N", "CA", "C", "O"])), theta[i, 2] + math.pi)) < 1e-4
        # Backbone atoms do not move with the torsions: CA at the frame origin, C on the x axis.
        torch.testing.assert_close(atom("CA"), torch.zeros(3, dtype=torch.float64))
        assert atom("C")[0] > 1.5 and abs(atom("C")[1:]).max() < 1e-3


def test_unknown_residue_has_no_atoms():
    aatype, backbone, angles = random_inputs(4)
    aatype[:] = 20
    positions = frames_to_atom14_positions(torsion_angles_to_frames(backbone, angles, aatype), aatype)
    assert not positions.any() and not atom37_mask(aatype).any()
