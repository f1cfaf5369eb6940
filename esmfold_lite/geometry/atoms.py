"""Torsion angles → rigid-group frames → atom coordinates (AlphaFold2 Algorithm 24), and atom layouts.

Atoms come out in the compact atom14 layout (``restype_name_to_atom14_names``); ``atom14_to_atom37`` scatters them
into the fixed 37-slot layout that PDB writing uses. ``aatype`` is AlphaFold's residue index (20 = X, which has no
atoms). All geometry runs in fp32, whatever the dtype of the network that produced the angles.
"""

from __future__ import annotations

import functools

import torch

from esmfold_lite.geometry import residue_constants as rc
from esmfold_lite.geometry.rigid import Rigid

_TABLES = {
    "default_frames": rc.restype_rigid_group_default_frame,  # (21, 8, 4, 4)
    "atom14_group": rc.restype_atom14_to_rigid_group,  # (21, 14)
    "atom14_positions": rc.restype_atom14_rigid_group_positions,  # (21, 14, 3)
    "atom14_mask": rc.restype_atom14_mask,  # (21, 14)
    "atom37_mask": rc.restype_atom37_mask,  # (21, 37)
    "atom37_to_atom14": rc.restype_atom37_to_atom14,  # (21, 37)
}


@functools.cache
def _table(name: str, device: torch.device) -> torch.Tensor:
    """A residue-constant table as a tensor on ``device`` (made once; a normal tensor even under inference mode)."""
    with torch.inference_mode(False):
        return torch.as_tensor(_TABLES[name], device=device)


def residue_table(name: str, aatype: torch.Tensor) -> torch.Tensor:
    """Rows of a per-restype table for each residue: ``table[aatype]``, shape (*aatype.shape, ...)."""
    return _table(name, aatype.device)[aatype.long()]


def torsion_angles_to_frames(backbone: Rigid, angles: torch.Tensor, aatype: torch.Tensor) -> Rigid:
    """The eight rigid-group frames of every residue in global coordinates (Algorithm 24, lines 1-10).

    Args:
        backbone: (..., N) backbone frames (group 0), translations in Å.
        angles: (..., N, 7, 2) (sin, cos) of pre-omega, phi, psi, chi1..chi4; expected normalised.
        aatype: (..., N) long.

    Returns:
        (..., N, 8) frames: backbone, pre-omega, phi, psi, chi1..chi4.
    """
    default = Rigid.from_tensor_4x4(residue_table("default_frames", aatype))  # (..., N, 8)
    sin, cos = angles.float().unbind(dim=-1)
    # Group 0 is the backbone itself: torsion 0, i.e. (sin, cos) = (0, 1).
    sin = torch.cat([torch.zeros_like(sin[..., :1]), sin], dim=-1)
    cos = torch.cat([torch.ones_like(cos[..., :1]), cos], dim=-1)
    zero, one = torch.zeros_like(sin), torch.ones_like(sin)
    # Rotation by the torsion about each group's x axis.
    rot_x = torch.stack(
        [
            torch.stack([one, zero, zero], dim=-1),
            torch.stack([zero, cos, -sin], dim=-1),
            torch.stack([zero, sin, cos], dim=-1),
        ],
        dim=-2,
    )
    local = default.compose(Rigid(rot_x, torch.zeros_like(default.trans)))  # each group in its parent's frame

    # chi2..chi4 hang off the previous chi group; bring them into backbone coordinates.
    to_backbone = [local[..., g] for g in range(5)]
    for g in range(5, 8):
        to_backbone.append(to_backbone[-1].compose(local[..., g]))
    in_backbone = Rigid(
        torch.stack([f.rot for f in to_backbone], dim=-3), torch.stack([f.trans for f in to_backbone], dim=-2)
    )
    return backbone[..., None].compose(in_backbone)


def frames_to_atom14_positions(frames: Rigid, aatype: torch.Tensor) -> torch.Tensor:
    """Idealised atom coordinates from the rigid-group frames (Algorithm 24, line 11).

    Args:
        frames: (..., N, 8) global rigid-group frames, as from ``torsion_angles_to_frames``.
        aatype: (..., N) long.

    Returns:
        (..., N, 14, 3) atom14 positions in Å, zero for slots the residue type does not have.
    """
    group = residue_table("atom14_group", aatype)[..., None, None]  # (..., N, 14, 1, 1)
    rot = torch.take_along_dim(frames.rot, group, dim=-3)  # (..., N, 14, 3, 3)
    trans = torch.take_along_dim(frames.trans, group[..., 0], dim=-2)  # (..., N, 14, 3)
    positions = Rigid(rot, trans).apply(residue_table("atom14_positions", aatype))
    return positions * residue_table("atom14_mask", aatype)[..., None]


def atom14_mask(aatype: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(..., N, 14) float: 1 where the residue type has an atom in that atom14 slot (times the residue ``mask``)."""
    exists = residue_table("atom14_mask", aatype)
    return exists if mask is None else exists * mask[..., None].to(exists.dtype)


def atom37_mask(aatype: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(..., N, 37) float: 1 where the residue type has that atom (no OXT), times the residue ``mask`` if given."""
    exists = residue_table("atom37_mask", aatype)
    return exists if mask is None else exists * mask[..., None].to(exists.dtype)


def atom14_to_atom37(atom14: torch.Tensor, aatype: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scatter atom14 data into the atom37 layout; absent atoms (and masked residues) become zero.

    Args:
        atom14: (..., N, 14, *feature) per-atom data, e.g. (..., N, 14, 3) positions.
        aatype: (..., N) long.
        mask: optional (..., N) residue mask.

    Returns:
        (..., N, 37, *feature).
    """
    feature_dims = atom14.dim() - aatype.dim() - 1
    index = residue_table("atom37_to_atom14", aatype)  # (..., N, 37)
    index = index.reshape(*index.shape, *([1] * feature_dims)).expand(*index.shape, *atom14.shape[aatype.dim() + 1 :])
    atom37 = torch.gather(atom14, aatype.dim(), index)
    exists = atom37_mask(aatype, mask).to(atom14.dtype)
    return atom37 * exists.reshape(*exists.shape, *([1] * feature_dims))
