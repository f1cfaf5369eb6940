"""Structure module, AlphaFold2 Algorithm 20, as in ESMFold.

Starting from identity frames at the origin, ``no_blocks`` iterations of one shared block refine the single
representation with invariant point attention, update every residue's backbone frame (Algorithm 23) and predict
seven torsion angles, from which the side-chain frames and atom14 coordinates follow (Algorithm 24). Frames are
kept as quaternion + translation in nm inside the loop and reported in Å (``trans_scale_factor``); the rotation
is detached between iterations, as in the original.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.fold.chunking import RowMap
from esmfold_lite.fold.config import StructureModuleConfig
from esmfold_lite.fold.ipa import InvariantPointAttention
from esmfold_lite.geometry.atoms import frames_to_atom14_positions, torsion_angles_to_frames
from esmfold_lite.geometry.rigid import Rigid, compose_quat_update, quat_to_rot


def _zero_init(linear: nn.Linear) -> nn.Linear:
    """Output layers of residual branches start at zero (AlphaFold's "final" init)."""
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class TransitionLayer(nn.Module):
    """Residual three-layer MLP on the single representation (Algorithm 20, line 8)."""

    def __init__(self, c_s: int):
        super().__init__()
        self.linear_1 = nn.Linear(c_s, c_s)
        self.linear_2 = nn.Linear(c_s, c_s)
        self.linear_3 = _zero_init(nn.Linear(c_s, c_s))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s: (..., c_s) → (..., c_s)."""
        return s + self.linear_3(self.linear_2(self.linear_1(s).relu_()).relu_())


class Transition(nn.Module):
    """Transition layers, dropout, LayerNorm (Algorithm 20, lines 8-9)."""

    def __init__(self, c_s: int, no_layers: int, dropout_rate: float):
        super().__init__()
        self.layers = nn.ModuleList(TransitionLayer(c_s) for _ in range(no_layers))
        self.dropout = nn.Dropout(dropout_rate)
        self.layer_norm = nn.LayerNorm(c_s)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s: (..., c_s) → (..., c_s)."""
        for layer in self.layers:
            s = layer(s)
        return self.layer_norm(self.dropout(s))


class BackboneUpdate(nn.Module):
    """Algorithm 23, line 1: single representation → (b, c, d, t_x, t_y, t_z) per residue."""

    def __init__(self, c_s: int):
        super().__init__()
        self.linear = _zero_init(nn.Linear(c_s, 6))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s: (..., c_s) → (..., 6)."""
        return self.linear(s)


class AngleResnetBlock(nn.Module):
    def __init__(self, c_resnet: int):
        super().__init__()
        self.linear_1 = nn.Linear(c_resnet, c_resnet)
        self.linear_2 = _zero_init(nn.Linear(c_resnet, c_resnet))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """a: (..., c_resnet) → (..., c_resnet)."""
        return a + self.linear_2(self.linear_1(torch.relu(a)).relu_())


class AngleResnet(nn.Module):
    """Torsion angles from the current and the initial single representation (Algorithm 20, lines 11-14).

    As in the released AlphaFold code (unlike the supplement's pseudocode), both inputs pass a ReLU first.
    """

    def __init__(self, c_s: int, c_resnet: int, no_blocks: int, no_angles: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear_in = nn.Linear(c_s, c_resnet)
        self.linear_initial = nn.Linear(c_s, c_resnet)
        self.layers = nn.ModuleList(AngleResnetBlock(c_resnet) for _ in range(no_blocks))
        self.linear_out = nn.Linear(c_resnet, no_angles * 2)

    def forward(self, s: torch.Tensor, s_initial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            s: (..., c_s) current single representation.
            s_initial: (..., c_s) single representation at the start of the structure module.

        Returns:
            ``(unnormalized, normalized)`` angles, each (..., no_angles, 2) as (sin, cos).
        """
        a = self.linear_in(torch.relu(s)) + self.linear_initial(torch.relu(s_initial))
        for layer in self.layers:
            a = layer(a)
        unnormalized = rearrange(self.linear_out(torch.relu(a)), "... (angle sin_cos) -> ... angle sin_cos", sin_cos=2)
        norm = torch.sqrt(torch.clamp((unnormalized**2).sum(dim=-1, keepdim=True), min=self.eps))
        return unnormalized, unnormalized / norm


class StructureModule(nn.Module):
    """Algorithm 20 with ESMFold's sizes and parameter names (``trunk.structure_module.*`` without the prefix)."""

    def __init__(self, cfg: StructureModuleConfig):
        super().__init__()
        self.cfg = cfg
        self.layer_norm_s = nn.LayerNorm(cfg.c_s)
        self.layer_norm_z = nn.LayerNorm(cfg.c_z)
        self.linear_in = nn.Linear(cfg.c_s, cfg.c_s)
        self.ipa = InvariantPointAttention(
            cfg.c_s,
            cfg.c_z,
            cfg.c_ipa,
            cfg.no_heads_ipa,
            cfg.no_qk_points,
            cfg.no_v_points,
            inf=cfg.inf,
            eps=cfg.epsilon,
        )
        self.ipa_dropout = nn.Dropout(cfg.dropout_rate)
        self.layer_norm_ipa = nn.LayerNorm(cfg.c_s)
        self.transition = Transition(cfg.c_s, cfg.no_transition_layers, cfg.dropout_rate)
        self.bb_update = BackboneUpdate(cfg.c_s)
        self.angle_resnet = AngleResnet(cfg.c_s, cfg.c_resnet, cfg.no_resnet_blocks, cfg.no_angles, cfg.epsilon)

    def forward(
        self,
        evoformer_output: dict[str, torch.Tensor],
        aatype: torch.Tensor,
        mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        lazy_pair: bool = False,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            evoformer_output: {"single": (B, L, c_s), "pair": (B, L, L, c_z)} from the trunk; the pair may be a
                ``chunking.RowMap`` over its rows.
            aatype: (B, L) long, AlphaFold residue order, 20 = X.
            mask: (B, L) residue mask (1 = real residue); None means all ones.
            chunk_size: IPA query rows per chunk (None: unchunked); does not change the result.
            lazy_pair: never hold the normalized pair input whole: every IPA call computes it again, a chunk of
                rows at a time (no L×L×c_z tensor; the pair projection then runs once per block instead of once).

        Returns:
            Per-iteration outputs stacked along a leading ``no_blocks`` dimension, plus the final single:
              "frames" (n, B, L, 7): backbone quaternion (w, x, y, z) and translation in Å;
              "sidechain_frames" (n, B, L, 8, 4, 4): rigid-group frames in Å;
              "unnormalized_angles", "angles" (n, B, L, 7, 2): torsions as (sin, cos);
              "positions" (n, B, L, 14, 3): atom14 coordinates in Å;
              "states" (n, B, L, c_s): single representation after each iteration;
              "single" (B, L, c_s): the final single representation.
            Geometric outputs are fp32.
        """
        cfg = self.cfg
        s = self.layer_norm_s(evoformer_output["single"])
        pair = evoformer_output["pair"]
        z = pair.then(self.layer_norm_z) if isinstance(pair, RowMap) else RowMap(self.layer_norm_z, pair, dim=1)
        if not lazy_pair:
            z = z.materialize(chunk_size)
        if mask is None:
            mask = s.new_ones(s.shape[:-1])
        s_initial = s
        s = self.linear_in(s)

        batch_shape = s.shape[:-1]
        quat = torch.zeros(*batch_shape, 4, device=s.device, dtype=torch.float32)
        quat[..., 0] = 1.0
        trans = torch.zeros(*batch_shape, 3, device=s.device, dtype=torch.float32)

        outputs: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("frames", "sidechain_frames", "unnormalized_angles", "angles", "positions", "states")
        }
        for _ in range(cfg.no_blocks):
            frames = Rigid(quat_to_rot(quat), trans)
            s = s + self.ipa(s, z, frames, mask, chunk_size=chunk_size)
            s = self.layer_norm_ipa(self.ipa_dropout(s))
            s = self.transition(s)

            quat, trans = compose_quat_update(quat, trans, self.bb_update(s))
            backbone = Rigid(quat_to_rot(quat), trans).scale_translation(cfg.trans_scale_factor)
            unnormalized_angles, angles = self.angle_resnet(s, s_initial)
            group_frames = torsion_angles_to_frames(backbone, angles, aatype)

            outputs["frames"].append(torch.cat([quat, trans * cfg.trans_scale_factor], dim=-1))
            outputs["sidechain_frames"].append(group_frames.to_tensor_4x4())
            outputs["unnormalized_angles"].append(unnormalized_angles)
            outputs["angles"].append(angles)
            outputs["positions"].append(frames_to_atom14_positions(group_frames, aatype))
            outputs["states"].append(s)

            quat = quat.detach()  # stop the rotation gradient between iterations (translation keeps it)

        result = {k: torch.stack(v) for k, v in outputs.items()}
        result["single"] = s
        return result
