"""Rigid transforms and quaternions: round trips, consistency, and agreement with openfold's Rigid."""

import math

import torch
from transformers.models.esm.openfold_utils import rigid_utils as ref

from esmfold_lite.geometry.rigid import Rigid, compose_quat_update, quat_multiply, quat_to_rot, rot_to_quat


def random_quat(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, 4, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def random_rigid(*shape, seed=0):
    g = torch.Generator().manual_seed(seed + 1000)
    return Rigid(
        quat_to_rot(random_quat(*shape, seed=seed)), 5 * torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    )


def close(a, b, atol=1e-10):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def test_quat_to_rot_is_rotation_and_matches_reference():
    q = random_quat(64)
    r = quat_to_rot(q)
    close(r @ r.transpose(-1, -2), torch.eye(3, dtype=r.dtype).expand_as(r))
    close(torch.linalg.det(r), torch.ones(64, dtype=r.dtype))
    close(r, ref.quat_to_rot(q))


def test_rot_to_quat_inverts_quat_to_rot():
    q = random_quat(64, seed=1)
    q = torch.where(q[..., :1] < 0, -q, q)
    close(rot_to_quat(quat_to_rot(q)), q, atol=1e-8)
    # Rotations by angles near pi (w near 0) too.
    axis = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=-1)
    half = torch.full((8, 1), (math.pi - 1e-4) / 2, dtype=torch.float64)
    q_pi = torch.cat([half.cos(), half.sin() * axis], dim=-1)
    close(quat_to_rot(rot_to_quat(quat_to_rot(q_pi))), quat_to_rot(q_pi), atol=1e-8)


def test_quat_multiply_is_rotation_composition():
    q1, q2 = random_quat(32, seed=2), random_quat(32, seed=3)
    close(quat_to_rot(quat_multiply(q1, q2)), quat_to_rot(q1) @ quat_to_rot(q2))
    close(quat_multiply(q1, q2), ref.quat_multiply(q1, q2))


def test_compose_apply_invert_round_trips():
    a, b = random_rigid(5, 7, seed=4), random_rigid(5, 7, seed=5)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    close(a.compose(b).apply(x), a.apply(b.apply(x)))
    close(a.invert_apply(a.apply(x)), x)
    close(a.invert().apply(x), a.invert_apply(x))
    ident = a.compose(a.invert())
    close(ident.rot, torch.eye(3, dtype=x.dtype).expand_as(ident.rot))
    close(ident.trans, torch.zeros_like(ident.trans))
    identity = Rigid.identity((5, 7), dtype=torch.float64)
    close(identity.apply(x), x)


def test_apply_and_compose_match_reference():
    a, b = random_rigid(4, 6, seed=6), random_rigid(4, 6, seed=7)
    ra = ref.Rigid(ref.Rotation(rot_mats=a.rot), a.trans)
    rb = ref.Rigid(ref.Rotation(rot_mats=b.rot), b.trans)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    close(a.apply(x).float(), ra.apply(x.float()), atol=1e-5)
    close(a.compose(b).to_tensor_4x4().float(), ra.compose(rb).to_tensor_4x4(), atol=1e-5)
    close(a.invert().to_tensor_4x4().float(), ra.invert().to_tensor_4x4(), atol=1e-5)


def test_broadcasting_and_indexing():
    a = random_rigid(3, 4, seed=8)
    pts = torch.randn(3, 4, 5, 3, dtype=torch.float64)
    expected = torch.stack([a.apply(pts[:, :, k]) for k in range(5)], dim=2)
    close(a[..., None].apply(pts), expected)
    close(a[:, 2].trans, a.trans[:, 2])


def test_tensor_4x4_and_tensor_7_round_trips():
    a = random_rigid(10, seed=9)
    b = Rigid.from_tensor_4x4(a.to_tensor_4x4())
    close(b.rot, a.rot)
    close(b.trans, a.trans)
    c = Rigid.from_tensor_7(a.to_tensor_7())
    close(c.rot, a.rot, atol=1e-8)
    close(c.trans, a.trans)
    q = random_quat(10, seed=10)
    t7 = torch.cat([3 * q, torch.randn(10, 3, dtype=q.dtype)], dim=-1)
    close(Rigid.from_tensor_7(t7, normalize_quats=True).rot, quat_to_rot(q))


def test_scale_translation_and_stop_rot_gradient():
    a = random_rigid(3, seed=11)
    rot = a.rot.clone().requires_grad_()
    trans = a.trans.clone().requires_grad_()
    b = Rigid(rot, trans).scale_translation(10.0)
    close(b.trans, 10 * a.trans)
    c = b.stop_rot_gradient()
    assert not c.rot.requires_grad and c.trans.requires_grad
    c.apply(torch.ones(3, 3, dtype=torch.float64)).sum().backward()
    assert rot.grad is None and trans.grad is not None


def test_from_3_points_matches_reference_and_places_points():
    g = torch.Generator().manual_seed(12)
    p1, p2, p3 = (torch.randn(6, 3, generator=g) * 3 for _ in range(3))
    ours = Rigid.from_3_points(p1, p2, p3)
    theirs = ref.Rigid.from_3_points(p1, p2, p3)
    close(ours.to_tensor_4x4(), theirs.to_tensor_4x4(), atol=1e-6)
    local = ours.invert_apply(p1)
    assert (local[:, 0] < 0).all()
    close(local[:, 1:], torch.zeros(6, 2), atol=1e-5)
    local3 = ours.invert_apply(p3)
    assert (local3[:, 1] > 0).all()
    close(local3[:, 2], torch.zeros(6), atol=1e-5)


def test_compose_quat_update_matches_reference():
    q = random_quat(2, 9, seed=13).float()
    t = torch.randn(2, 9, 3)
    update = torch.randn(2, 9, 6)
    new_q, new_t = compose_quat_update(q, t, update)
    theirs = ref.Rigid(ref.Rotation(quats=q), t).compose_q_update_vec(update)
    close(new_q, theirs.get_rots().get_quats(), atol=1e-6)
    close(new_t, theirs.get_trans(), atol=1e-6)
    # It composes on the right: new frame = old frame ∘ (update rotation, update translation).
    step = Rigid.from_tensor_7(torch.cat([torch.ones_like(update[..., :1]), update], dim=-1), normalize_quats=True)
    composed = Rigid(quat_to_rot(q), t).compose(step)
    close(quat_to_rot(new_q), composed.rot, atol=1e-6)
    close(new_t, composed.trans, atol=1e-6)
