"""ESMFold: ESM-2 layer representations → folding trunk → structure module → confidence heads.

Data flow of one forward pass (B sequences of L residues):
``aatype (B, L)`` → ESM-2 tokens → every layer's states ``(B, L, n_layers + 1, D)`` → softmax-weighted sum
(``esm_s_combine``) → ``esm_s_mlp`` + residue embedding = s_s_0 ``(B, L, c_s)``; s_z_0 = 0 ``(B, L, L, c_z)`` →
trunk with recycling → structure module → heads (distogram, pTM/PAE, pLDDT, lm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from esmfold_lite.fold.auto_chunk import choose_chunk_plan, trunk_peak_bytes
from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.fold.chunking import ChunkPlan, chunk_apply
from esmfold_lite.fold.config import ESMFoldConfig
from esmfold_lite.fold.heads import (
    best_frame_ptm,
    mean_plddt,
    pae_from_logits,
    plddt_from_logits,
    ptm_per_frame,
    residue_plddt,
)
from esmfold_lite.fold.host_heap import kept_heap
from esmfold_lite.fold.trunk import FoldingTrunk
from esmfold_lite.geometry.atoms import atom14_to_atom37, atom37_mask
from esmfold_lite.geometry.residue_constants import restype_num, restypes_with_x
from esmfold_lite.lm.esm2 import ESM2
from esmfold_lite.prediction import Prediction
from esmfold_lite.sequences import checked_sequences

# Trunk residue vocabulary: 0 = padding, 1..21 = AF2 restypes + X, then unknown and mask (the original's 23 tokens).
N_TRUNK_TOKENS = restype_num + 3


class ESMFold(nn.Module):
    """The ESMFold model. ``lm`` is the ESM-2 language model whose layers feed the trunk (attribute ``esm``).

    State-dict keys equal the official checkpoint's (``esm_s_combine``, ``esm_s_mlp.*``, ``embedding.weight``,
    ``trunk.*``, ``distogram_head.*``, ``ptm_head.*``, ``lm_head.*``, ``lddt_head.*``) plus ``esm.*`` for the LM.
    """

    def __init__(self, cfg: ESMFoldConfig, lm: ESM2):
        super().__init__()
        self.cfg = cfg
        self.esm = lm.requires_grad_(False)
        alphabet = lm.alphabet
        # trunk token (0 = padding, 1 + AF2 restype) -> ESM token; a plain list, so meta-device construction works
        self.af2_to_esm = [alphabet.padding_idx] + [alphabet.tok_to_idx[aa] for aa in restypes_with_x]

        c_s, c_z = cfg.trunk.sequence_state_dim, cfg.trunk.pairwise_state_dim
        sm_c_s, hid = cfg.trunk.structure_module.c_s, cfg.lddt_head_hid_dim
        self.esm_s_combine = nn.Parameter(torch.zeros(lm.num_layers + 1))
        self.esm_s_mlp = nn.Sequential(
            nn.LayerNorm(lm.embed_dim), nn.Linear(lm.embed_dim, c_s), nn.ReLU(), nn.Linear(c_s, c_s)
        )
        self.embedding = nn.Embedding(N_TRUNK_TOKENS, c_s, padding_idx=0)
        self.trunk = FoldingTrunk(cfg.trunk)
        self.distogram_head = nn.Linear(c_z, cfg.distogram_bins)
        self.ptm_head = nn.Linear(c_z, cfg.ptm_bins)
        self.lm_head = nn.Linear(c_s, N_TRUNK_TOKENS)
        self.lddt_head = nn.Sequential(
            nn.LayerNorm(sm_c_s), nn.Linear(sm_c_s, hid), nn.Linear(hid, hid), nn.Linear(hid, 37 * cfg.lddt_bins)
        )

    @property
    def device(self) -> torch.device:
        return self.esm_s_combine.device

    @property
    def random_weights(self) -> bool:
        """True for a model of randomized weights (``esmfold-lite weights make-random``): its structures are no
        predictions, and every ``Prediction`` (and file written from one) says so."""
        return self.cfg.esmfold_lite_random_weights

    def language_model_states(self, aatype: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every ESM-2 layer's states for the residues: ``(B, L, n_layers + 1, D)`` in the LM's dtype.

        The LM sees ``<cls>`` + residues + ``<eos>`` + padding, as in the original.
        """
        alphabet = self.esm.alphabet
        lm_device = next(self.esm.parameters()).device
        af2_to_esm = torch.tensor(self.af2_to_esm, device=aatype.device)
        residues = af2_to_esm[(aatype + 1).masked_fill(mask != 1, 0)]
        B = residues.shape[0]
        tokens = torch.cat(
            [residues.new_full((B, 1), alphabet.cls_idx), residues, residues.new_full((B, 1), alphabet.padding_idx)],
            dim=1,
        )
        tokens[torch.arange(B), (tokens != alphabet.padding_idx).sum(1)] = alphabet.eos_idx
        layers = range(self.esm.num_layers + 1)
        out = self.esm(tokens.to(lm_device), repr_layers=layers)["representations"]
        return torch.stack([out[i] for i in layers], dim=2)[:, 1:-1].to(self.device)

    def forward(
        self,
        aatype: torch.Tensor,
        mask: torch.Tensor | None = None,
        residue_index: torch.Tensor | None = None,
        num_recycles: int | None = None,
        chunk_size: int | str | ChunkPlan | None = None,
    ) -> dict[str, torch.Tensor]:
        """Raw outputs of the original ``ESMFold.forward``.

        Args:
            aatype: (B, L) long, AF2 restype order (20 = X).
            mask: (B, L) 1 for residues, 0 for padding.
            residue_index: (B, L) long; contiguous when None.
            num_recycles: N runs N + 1 trunk passes; None runs the config's ``max_recycles`` passes.
            chunk_size: rows per chunk for the trunk's O(L²)/O(L³) steps and the IPA (None = unchunked; the
                outputs do not depend on it; an integer also sets how lean the pair memory is, see
                ``chunking.ChunkPlan.of``); ``"auto"`` picks the fastest plan that fits in the free memory of the
                trunk's device (``fold.auto_chunk.choose_chunk_plan``); a ``ChunkPlan`` is used as it is.

        Returns:
            dict with ``positions`` (n_sm_blocks, B, L, 14, 3), ``atom37_positions`` (B, L, 37, 3),
            ``atom37_atom_exists`` (B, L, 37), ``plddt`` (B, L, 37) 0–100, ``ptm`` (B,), ``ptm_logits``,
            ``predicted_aligned_error`` (B, L, L), ``distogram_logits``, ``lm_logits``, ``s_s``, ``s_z``,
            ``frames``, ``angles``, ``states``, ... A lean plan (``pair_blocks > 1``, what "auto" picks when
            memory is short) computes the heads a chunk of rows at a time and leaves out the L×L×bins
            ``ptm_logits`` and ``distogram_logits``.
        """
        with kept_heap(aatype.device):
            return self._forward(aatype, mask, residue_index, num_recycles, chunk_size)

    def chunk_plan(self, length: int, batch: int = 1, chunk_size: int | str | ChunkPlan | None = "auto") -> ChunkPlan:
        """The plan a fold of ``batch`` sequences of ``length`` positions runs with, ``chunk_size`` as ``forward``
        takes it (``"auto"``: chosen now for the free memory of the trunk's device)."""
        if chunk_size == "auto":
            return choose_chunk_plan(length, self.cfg.trunk, batch, self.device, self.esm_s_combine.dtype)
        if isinstance(chunk_size, str):
            raise ValueError(f'chunk_size must be a positive integer, None or "auto", got {chunk_size!r}')
        return ChunkPlan.of(chunk_size, length)

    def planned_peak_bytes(self, length: int, batch: int = 1, chunk_size: int | str | ChunkPlan | None = "auto") -> int:
        """The chunk planner's estimate of the trunk's peak memory in bytes for such a fold (``chunk_plan``,
        ``fold.auto_chunk.trunk_peak_bytes``)."""
        plan = self.chunk_plan(length, batch, chunk_size)
        return trunk_peak_bytes(length, self.cfg.trunk, plan, batch, self.esm_s_combine.element_size())

    def _forward(self, aatype, mask, residue_index, num_recycles, chunk_size) -> dict[str, torch.Tensor]:
        B, L = aatype.shape
        if mask is None:
            mask = torch.ones_like(aatype)
        if residue_index is None:
            residue_index = torch.arange(L, device=aatype.device).expand(B, L)

        plan = self.chunk_plan(L, B, chunk_size)
        esm_s = self.language_model_states(aatype, mask).to(self.esm_s_combine.dtype).detach()
        esm_s = (self.esm_s_combine.softmax(0).unsqueeze(0) @ esm_s).squeeze(2)
        s_s_0 = self.esm_s_mlp(esm_s) + self.embedding(aatype)
        s_z_0 = s_s_0.new_zeros(()).expand(B, L, L, self.cfg.trunk.pairwise_state_dim)  # zeros without memory

        out = self.trunk(s_s_0, s_z_0, aatype, residue_index, mask, no_recycles=num_recycles, chunk_size=plan)
        out.update(self._pair_heads(out["s_z"], mask, plan))
        out["lm_logits"] = self.lm_head(out["s_s"])
        out["atom37_positions"] = atom14_to_atom37(out["positions"][-1], aatype, mask)
        out["atom37_atom_exists"] = atom37_mask(aatype, mask)
        states = out["states"]
        lddt_bins = self.cfg.lddt_bins
        out["lddt_head"] = rearrange(self.lddt_head(states), "n b l (atom bin) -> n b l atom bin", bin=lddt_bins)
        out["plddt"] = plddt_from_logits(out["lddt_head"][-1])
        return out

    def _pair_heads(self, s_z: torch.Tensor, mask: torch.Tensor, plan: ChunkPlan) -> dict[str, torch.Tensor]:
        """PAE and pTM (and, unless ``plan`` is lean, the ptm and distogram logits) from s_z (B, L, L, c_z),
        ``plan.rows`` rows at a time: [b, i, j] of the ptm head is residue j aligned on residue i's frame."""
        bins = self.cfg.ptm_bins

        def aligned_error(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return pae_from_logits(logits, no_bins=bins), ptm_per_frame(logits, mask, no_bins=bins)

        if plan.lean:  # never an L×L×bins tensor
            pae, per_frame = chunk_apply(lambda z: aligned_error(self.ptm_head(z)), (s_z,), (1,), plan.rows, 1)
            return {"predicted_aligned_error": pae, "ptm": best_frame_ptm(per_frame, mask)}
        disto = self.distogram_head(s_z)
        disto = (disto + disto.transpose(1, 2)).div_(2)
        ptm_logits = self.ptm_head(s_z)
        pae, per_frame = chunk_apply(aligned_error, (ptm_logits,), (1,), plan.rows, 1)
        return {
            "distogram_logits": disto,
            "ptm_logits": ptm_logits,
            "predicted_aligned_error": pae,
            "ptm": best_frame_ptm(per_frame, mask),
        }

    @torch.no_grad()
    def fold(
        self, sequences: str | Sequence[str], num_recycles: int | None = None, chunk_size: int | str | None = "auto"
    ) -> Prediction:
        """Fold one or more sequences (``"SEQA:SEQB"`` for a complex) → ``Prediction`` (linkers cut on output).

        Sequences follow the rule of ``esmfold_lite.sequences``: upper or lower case, whitespace and one trailing ``*``
        per chain are accepted, and ``Prediction.sequences`` holds them normalized (upper case, no whitespace or
        ``*``). Outside ``Prediction.mask`` (batch padding, chain linkers) every float value is 0.

        Args:
            sequences: one sequence or a list; a list is folded as one padded batch.
            num_recycles: recycles after the first trunk pass (N runs N + 1 passes); None: the checkpoint's default
                (esmfold_v1: 4 passes, the same as 3).
            chunk_size: rows per chunk in the trunk's O(L²)/O(L³) steps, ``"auto"`` (the default: chunked only as
                far as the free memory asks, ``fold.auto_chunk``) or None (unchunked). Results do not depend on it.

        Raises:
            ValueError: no sequences, or a sequence with an empty chain, more chains than output files can name or a
                character that is not a residue letter (the message names the sequence's index, the character and
                its position); ``num_recycles`` negative.
            TypeError: ``sequences`` is not a string or a list of strings; ``num_recycles`` not an integer.
        """
        if num_recycles is not None and (isinstance(num_recycles, bool) or not isinstance(num_recycles, int)):
            raise TypeError(f"num_recycles must be an integer or None, got {num_recycles!r}")
        if num_recycles is not None and num_recycles < 0:
            raise ValueError(f"num_recycles must be >= 0 (or None for the checkpoint's default), got {num_recycles}")
        sequences = checked_sequences(sequences)
        batch = encode_batch(sequences)
        device = self.device
        out = self(
            batch.aatype.to(device),
            batch.mask.to(device),
            batch.residue_index.to(device),
            num_recycles=num_recycles,
            chunk_size=chunk_size,
        )
        keep = (batch.mask * batch.linker_mask).to(device)
        dropped = ~keep.bool()  # batch padding and chain linkers: their values are zeroed (in place, no copies)
        dropped_pairs = dropped[:, :, None] | dropped[:, None, :]
        atom_mask = out["atom37_atom_exists"] * keep.unsqueeze(-1)
        atom_plddt = out["plddt"].float().masked_fill_(dropped[..., None], 0.0)
        has_atoms = atom_mask.sum(dim=(-2, -1)) > 0
        disto = out.get("distogram_logits")  # absent when memory was short (see ``_pair_heads``)
        return Prediction(
            positions=out["atom37_positions"].float().masked_fill_(dropped[..., None, None], 0.0),
            atom_mask=atom_mask,
            plddt=residue_plddt(atom_plddt),
            mean_plddt=mean_plddt(atom_plddt, atom_mask).where(has_atoms, 0.0),  # not 0/0 for an all-unknown sequence
            ptm=out["ptm"].float(),
            pae=out["predicted_aligned_error"].float().masked_fill_(dropped_pairs, 0.0),
            aatype=batch.aatype.to(device),
            residue_index=batch.residue_index.to(device),
            chain_index=batch.chain_index.clamp(min=0).to(device),
            mask=keep,
            sequences=sequences,
            atom_plddt=atom_plddt,
            distogram_logits=None if disto is None else disto.masked_fill_(dropped_pairs[..., None], 0.0),
            random_weights=self.random_weights,
        )
