"""Rigid transformations x ↦ R x + t of 3-D points, and the quaternion form the structure module updates.

Rotations are stored as matrices; quaternions are (w, x, y, z) with the Hamilton product. Matrix products are
written as elementwise multiply-and-sum rather than ``matmul`` so they never run in TF32 or a lowered autocast
precision: coordinates in Å need the full fp32 mantissa, as in the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _mat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) @ (..., 3, 3), broadcasting over the leading dimensions."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(dim=-2)


def _mat_vec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) @ (..., 3) → (..., 3), broadcasting over the leading dimensions."""
    return (m * v[..., None, :]).sum(dim=-1)


def quat_to_rot(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) as (w, x, y, z) → rotation matrices (..., 3, 3)."""
    w, x, y, z = q.unbind(dim=-1)
    rows = (
        (w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def rot_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) → unit quaternions (..., 4) with w >= 0.

    The quaternion is the top eigenvector of the symmetric 4x4 matrix built from ``rot`` (Bar-Itzhack 2000), which
    stays accurate for every rotation angle and tolerates slightly non-orthogonal input. Runs in fp32 or wider.
    """
    r = rot if rot.dtype in (torch.float32, torch.float64) else rot.float()
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = (r[..., i, :].unbind(dim=-1) for i in range(3))
    k = torch.stack(
        [
            torch.stack([xx + yy + zz, zy - yz, xz - zx, yx - xy], dim=-1),
            torch.stack([zy - yz, xx - yy - zz, xy + yx, xz + zx], dim=-1),
            torch.stack([xz - zx, xy + yx, yy - xx - zz, yz + zy], dim=-1),
            torch.stack([yx - xy, xz + zx, yz + zy, zz - xx - yy], dim=-1),
        ],
        dim=-2,
    )
    q = torch.linalg.eigh(k / 3.0)[1][..., -1]
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product q1 ⊗ q2 of (..., 4) quaternions."""
    w1, x1, y1, z1 = q1.unbind(dim=-1)
    w2, x2, y2, z2 = q2.unbind(dim=-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def compose_quat_update(
    quat: torch.Tensor, trans: torch.Tensor, update: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone update of AlphaFold2 Algorithm 23, applied on the right of the current frames.

    Args:
        quat: (..., 4) current unit quaternions.
        trans: (..., 3) current translations.
        update: (..., 6): (b, c, d) of the non-unit quaternion (1, b, c, d) and a translation in the local frame.

    Returns:
        ``(quat, trans)`` of the composed frames; the quaternion ``q + q ⊗ (0, b, c, d)`` is renormalised.
    """
    update = update.to(quat.dtype)
    vec, local_trans = update[..., :3], update[..., 3:]
    new_quat = quat + quat_multiply(quat, torch.cat([torch.zeros_like(vec[..., :1]), vec], dim=-1))
    new_quat = new_quat / torch.linalg.norm(new_quat, dim=-1, keepdim=True)
    new_trans = trans + _mat_vec(quat_to_rot(quat), local_trans)
    return new_quat, new_trans


@dataclass(frozen=True, eq=False)
class Rigid:
    """A batch of rigid transforms ``x ↦ rot @ x + trans``.

    Attributes:
        rot: (..., 3, 3) rotation matrices.
        trans: (..., 3) translations.
    """

    rot: torch.Tensor
    trans: torch.Tensor

    def __post_init__(self):
        if self.rot.shape[-2:] != (3, 3) or self.trans.shape[-1] != 3 or self.rot.shape[:-2] != self.trans.shape[:-1]:
            raise ValueError(
                f"Rigid needs rot (..., 3, 3) and trans (..., 3), got {self.rot.shape}, {self.trans.shape}"
            )

    @property
    def shape(self) -> torch.Size:
        return self.trans.shape[:-1]

    @staticmethod
    def identity(shape: tuple[int, ...], device=None, dtype: torch.dtype = torch.float32) -> Rigid:
        rot = torch.eye(3, device=device, dtype=dtype).expand(*shape, 3, 3)
        return Rigid(rot, torch.zeros(*shape, 3, device=device, dtype=dtype))

    def __getitem__(self, index) -> Rigid:
        """Index the batch dimensions, e.g. ``frames[..., None]`` or ``frames[:, 4]``."""
        index = index if isinstance(index, tuple) else (index,)
        return Rigid(self.rot[index + (slice(None), slice(None))], self.trans[index + (slice(None),)])

    def compose(self, other: Rigid) -> Rigid:
        """``self ∘ other``: apply ``other`` first, then ``self``."""
        return Rigid(_mat_mul(self.rot, other.rot), _mat_vec(self.rot, other.trans) + self.trans)

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) points in the local frame → global coordinates."""
        return _mat_vec(self.rot, points) + self.trans

    def invert_apply(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) global points → coordinates in the local frame."""
        return _mat_vec(self.rot.transpose(-1, -2), points - self.trans)

    def invert(self) -> Rigid:
        rot_t = self.rot.transpose(-1, -2)
        return Rigid(rot_t, -_mat_vec(rot_t, self.trans))

    def scale_translation(self, factor: float) -> Rigid:
        return Rigid(self.rot, self.trans * factor)

    def stop_rot_gradient(self) -> Rigid:
        """The same transform with the rotation detached from the autograd graph (translation keeps its gradient)."""
        return Rigid(self.rot.detach(), self.trans)

    def to_tensor_4x4(self) -> torch.Tensor:
        """(..., 4, 4) homogeneous matrices."""
        top = torch.cat([self.rot, self.trans[..., None]], dim=-1)
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1.0
        return torch.cat([top, bottom], dim=-2)

    @staticmethod
    def from_tensor_4x4(m: torch.Tensor) -> Rigid:
        """(..., 4, 4) homogeneous matrices; the bottom row is ignored."""
        return Rigid(m[..., :3, :3], m[..., :3, 3])

    def to_tensor_7(self) -> torch.Tensor:
        """(..., 7): quaternion (w >= 0, see ``rot_to_quat``) then translation."""
        return torch.cat([rot_to_quat(self.rot).to(self.trans.dtype), self.trans], dim=-1)

    @staticmethod
    def from_tensor_7(t: torch.Tensor, normalize_quats: bool = False) -> Rigid:
        """(..., 7) quaternion + translation → Rigid."""
        quat = t[..., :4]
        if normalize_quats:
            quat = quat / torch.linalg.norm(quat, dim=-1, keepdim=True)
        return Rigid(quat_to_rot(quat), t[..., 4:])

    @staticmethod
    def from_3_points(
        p_neg_x_axis: torch.Tensor, origin: torch.Tensor, p_xy_plane: torch.Tensor, eps: float = 1e-8
    ) -> Rigid:
        """Frames by Gram-Schmidt (AlphaFold2 Algorithm 21), e.g. from (N, CA, C) backbone atoms.

        The x axis points from ``p_neg_x_axis`` to ``origin``; ``p_xy_plane`` lies in the xy plane with y > 0.
        All inputs (..., 3); ``eps`` is added under each square root of a norm.
        """
        e0 = origin - p_neg_x_axis
        e0 = e0 / torch.sqrt((e0 * e0).sum(dim=-1, keepdim=True) + eps)
        e1 = p_xy_plane - origin
        e1 = e1 - e0 * (e0 * e1).sum(dim=-1, keepdim=True)
        e1 = e1 / torch.sqrt((e1 * e1).sum(dim=-1, keepdim=True) + eps)
        e2 = torch.linalg.cross(e0, e1, dim=-1)
        return Rigid(torch.stack([e0, e1, e2], dim=-1), origin)
