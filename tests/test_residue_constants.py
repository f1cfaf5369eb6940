"""Residue constants equal AlphaFold's (as shipped in transformers' openfold_utils) and are self-consistent."""

import numpy as np
import pytest
from transformers.models.esm.openfold_utils import residue_constants as ref

from esmfold_lite.geometry import residue_constants as rc

PLAIN = [
    "restypes",
    "restype_order",
    "restype_num",
    "unk_restype_index",
    "restypes_with_x",
    "restype_order_with_x",
    "restype_1to3",
    "restype_3to1",
    "resnames",
    "resname_to_idx",
    "atom_types",
    "atom_order",
    "atom_type_num",
    "restype_name_to_atom14_names",
    "chi_angles_atoms",
    "chi_angles_mask",
    "chi_pi_periodic",
    "rigid_group_atom_positions",
]
ARRAYS = [
    "restype_atom14_mask",
    "restype_atom37_mask",
    "restype_atom14_to_rigid_group",
    "restype_atom37_to_rigid_group",
    "restype_atom14_rigid_group_positions",
    "restype_atom37_rigid_group_positions",
    "restype_rigid_group_default_frame",
]


@pytest.mark.parametrize("name", PLAIN)
def test_plain_constants_equal_reference(name):
    assert getattr(rc, name) == getattr(ref, name)


@pytest.mark.parametrize("name", ARRAYS)
def test_tables_equal_reference(name):
    ours, theirs = getattr(rc, name), getattr(ref, name)
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_residue_atoms_and_standard_mask():
    assert {k: sorted(v) for k, v in rc.residue_atoms.items()} == {k: sorted(v) for k, v in ref.residue_atoms.items()}
    np.testing.assert_array_equal(rc.restype_atom37_mask, ref.STANDARD_ATOM_MASK)


def test_chi_angle_atom_indices():
    expected = [quads + [[0, 0, 0, 0]] * (4 - len(quads)) for quads in ref.chi_angles_atom_indices_ours]
    np.testing.assert_array_equal(rc.chi_angles_atom_indices, np.array(expected))


def test_atom14_atom37_maps_are_inverse():
    for i in range(20):
        slots = np.nonzero(rc.restype_atom14_mask[i])[0]
        np.testing.assert_array_equal(rc.restype_atom37_to_atom14[i, rc.restype_atom14_to_atom37[i, slots]], slots)
        assert rc.restype_atom37_mask[i, rc.restype_atom14_to_atom37[i, slots]].all()
        assert rc.restype_atom37_mask[i].sum() == len(slots)
    assert not rc.restype_atom14_mask[20].any() and not rc.restype_atom37_mask[20].any()


def test_default_frames_are_rigid():
    """Frames of the groups a residue has are rotations; absent chi groups (and X) stay zero, as in AlphaFold."""
    present = np.concatenate([np.ones((20, 4), bool), np.array(rc.chi_angles_mask, bool)], axis=1)
    rot = rc.restype_rigid_group_default_frame[:20, :, :3, :3].astype(np.float64)[present]
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-6)
    assert not rc.restype_rigid_group_default_frame[:20][~present].any()
    assert not rc.restype_rigid_group_default_frame[20].any()
