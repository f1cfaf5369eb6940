"""Invariant point attention, AlphaFold2 Algorithm 22, in the form ESMFold's structure module uses.

Each head attends with three terms: scalar query·key, a bias from the pair representation, and the distance
between query and key points placed in 3-D by each residue's frame (weighted per head by a softplus weight). The
output gathers scalar values, value points (brought back into the query's frame, with their norms) and pair
features. Everything from the point projections to the attention output runs in fp32, as in the original (also
under ``torch.autocast``, which is switched off for it), and is cast back to the input dtype before ``linear_out``.

Squared point distances are summed directly from the differences q_ip − k_jp (``squared_point_distances``), not
by the expansion |q|² + |k|² − 2 q·k: points sit nanometres from the origin while near pairs are a few ångströms
apart, so the expansion cancels catastrophically in any format with fewer bits than fp32 (bf16/fp16 autocast, TF32
matmuls on a GPU), and the attention would lose exactly the near-neighbour geometry it is for.

Query rows are independent, so the L×L part can run ``chunk_size`` query rows at a time (``fold.chunking``); the
pair input may be a ``chunking.RowMap``, computed per chunk of query rows.
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from torch import nn

from esmfold_lite.fold.chunking import RowMap, chunk_apply
from esmfold_lite.geometry.rigid import Rigid


def squared_point_distances(q_pts: torch.Tensor, k_pts: torch.Tensor) -> torch.Tensor:
    """Σ_p |q_ip − k_jp|² per head, from the differences themselves (as accurate as the inputs' format).

    Args:
        q_pts: (B, I, H, P, 3) query points; k_pts: (B, J, H, P, 3) key points.

    Returns:
        (B, H, I, J).
    """
    q = rearrange(q_pts, "b i h p xyz -> (b h) i (p xyz)")
    k = rearrange(k_pts, "b j h p xyz -> (b h) j (p xyz)")
    distances = torch.cdist(q, k, compute_mode="donot_use_mm_for_euclid_dist")  # Euclidean, no matmul expansion
    return rearrange(distances.square(), "(b h) i j -> b h i j", b=q_pts.shape[0])


class InvariantPointAttention(nn.Module):
    """Algorithm 22. State-dict names follow ESMFold (``linear_q``, ``linear_kv``, ..., ``head_weights``).

    Args:
        c_s: single representation channels.
        c_z: pair representation channels.
        c_ipa: scalar query/key/value channels per head.
        no_heads: attention heads H.
        no_qk_points: query/key points per head.
        no_v_points: value points per head.
        inf: mask penalty added to logits of padded query/key pairs.
        eps: added under the square root of the value-point norms.
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_ipa: int,
        no_heads: int,
        no_qk_points: int,
        no_v_points: int,
        inf: float = 1e5,
        eps: float = 1e-8,
    ):
        super().__init__()
        self.c_ipa = c_ipa
        self.no_heads = no_heads
        self.no_qk_points = no_qk_points
        self.no_v_points = no_v_points
        self.inf = inf
        self.eps = eps

        h = no_heads
        self.linear_q = nn.Linear(c_s, h * c_ipa)
        self.linear_kv = nn.Linear(c_s, 2 * h * c_ipa)
        self.linear_q_points = nn.Linear(c_s, h * no_qk_points * 3)
        self.linear_kv_points = nn.Linear(c_s, h * (no_qk_points + no_v_points) * 3)
        self.linear_b = nn.Linear(c_z, h)
        # softplus(0.5413...) = 1: every head starts with unit point weight.
        self.head_weights = nn.Parameter(torch.full((h,), math.log(math.e - 1.0)))
        self.linear_out = nn.Linear(h * (c_ipa + c_z + 4 * no_v_points), c_s)
        # The update starts at zero, so an untrained block is the identity on s.
        nn.init.zeros_(self.linear_out.weight)
        nn.init.zeros_(self.linear_out.bias)

    def _points(self, x: torch.Tensor, frames: Rigid, no_points: int) -> torch.Tensor:
        """Linear output (B, L, 3*H*P), laid out as all x, then all y, then all z → global points (B, L, H, P, 3)."""
        local = rearrange(x.float(), "b l (xyz hp) -> b l hp xyz", xyz=3)
        return rearrange(frames[..., None].apply(local), "b l (h p) xyz -> b l h p xyz", h=self.no_heads)

    def forward(
        self,
        s: torch.Tensor,
        z: torch.Tensor | RowMap,
        frames: Rigid,
        mask: torch.Tensor,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """
        Args:
            s: (B, L, c_s) single representation.
            z: (B, L, L, c_z) pair representation, or a ``RowMap`` over its rows (dimension 1).
            frames: (B, L) backbone frames (fp32), translations in the structure module's units (nm).
            mask: (B, L) residue mask, 1 for real residues.
            chunk_size: evaluate the L×L terms this many query rows at a time (None: all at once).

        Returns:
            (B, L, c_s) update to ``s``.
        """
        h, c = self.no_heads, self.c_ipa
        q = rearrange(self.linear_q(s).float(), "b l (h c) -> b l h c", h=h)
        # linear_kv's output holds [k_h | v_h] per head h
        k, v = rearrange(self.linear_kv(s).float(), "b l (h kv c) -> kv b l h c", h=h, kv=2)
        q_pts = self._points(self.linear_q_points(s), frames, self.no_qk_points)  # (B, L, H, Pq, 3)
        kv_pts = self._points(self.linear_kv_points(s), frames, self.no_qk_points + self.no_v_points)
        k_pts, v_pts = kv_pts.split([self.no_qk_points, self.no_v_points], dim=-2)

        mask = mask.float()
        point_weights = nn.functional.softplus(self.head_weights.float())
        point_weights = point_weights * math.sqrt(1.0 / (3 * (self.no_qk_points * 9.0 / 2)))  # (H,)

        def attend(q_i, q_pts_i, z_i, mask_i, rot_i, trans_i):
            """Query rows i: (B, I, ...) slices → output features (B, I, H*(C + 4*Pv + c_z))."""
            pair_bias = self.linear_b(z_i)
            with torch.autocast(s.device.type, enabled=False):  # fp32 from here on, whatever autocast says
                logits = einsum(q_i, k, "b i h c, b j h c -> b h i j") * math.sqrt(1.0 / (3 * c))
                logits = logits + math.sqrt(1.0 / 3) * rearrange(pair_bias.float(), "b i j h -> b h i j")
                logits = logits - 0.5 * point_weights[:, None, None] * squared_point_distances(q_pts_i, k_pts)
                logits = logits + (self.inf * (mask_i[:, :, None] * mask[:, None, :] - 1))[:, None]
                a = torch.softmax(logits, dim=-1)  # (B, H, I, J)

                o = einsum(a, v, "b h i j, b j h c -> b i h c")
                o_pts = einsum(a, v_pts, "b h i j, b j h p xyz -> b i h p xyz")
                o_pts = Rigid(rot_i, trans_i)[..., None, None].invert_apply(o_pts)  # local to query frame i
                o_pts_norm = torch.sqrt((o_pts**2).sum(dim=-1) + self.eps)
                o_pair = einsum(a, z_i.float(), "b h i j, b i j c -> b i h c")
            return torch.cat(
                [
                    rearrange(o, "b i h c -> b i (h c)"),
                    rearrange(o_pts, "b i h p xyz -> b i (xyz h p)"),  # all x, then all y, then all z
                    rearrange(o_pts_norm, "b i h p -> b i (h p)"),
                    rearrange(o_pair, "b i h c -> b i (h c)"),
                ],
                dim=-1,
            )

        features = chunk_apply(
            attend, [q, q_pts, z, mask, frames.rot, frames.trans], dims=[1] * 6, chunk_size=chunk_size, out_dim=1
        )
        return self.linear_out(features.to(s.dtype))
