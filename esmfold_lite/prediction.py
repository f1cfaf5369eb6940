"""``Prediction``: what ``ESMFold.fold`` returns — coordinates and confidences for a batch, and PDB/mmCIF writing."""

from __future__ import annotations

from dataclasses import dataclass

import biotite.structure as struc
import numpy as np
import torch

from esmfold_lite.geometry.residue_constants import resnames
from esmfold_lite.io.modelcif import ModelScores
from esmfold_lite.io.pdbx_polymer import PolymerChain
from esmfold_lite.io.structure import CHAIN_IDS, to_atom_array, to_mmcif_string, to_pdb_string


@dataclass
class Prediction:
    """Structures of B sequences padded to L positions (chain linkers of complexes included).

    ``mask`` marks the residues of the input chains; batch padding and the poly-G linkers joining chains are 0 there
    and are cut by ``select`` / ``to_pdb`` / ``to_mmcif``. Those positions hold no values: ``positions``,
    ``atom_mask``, ``plddt``, ``atom_plddt`` and their rows and columns of ``pae`` and ``distogram_logits`` are 0
    (never NaN); the integer fields there are placeholders (linkers keep their glycine ``aatype``).

    ``ptm`` is computed by the model over what the trunk saw (linkers included, as in the original ESMFold);
    ``mean_plddt`` is the mean over the existing atoms of the input chains, and 0 for a sequence without any atom
    (only unknown residues ``X B Z U O``, which ESMFold places no atoms for; such a prediction cannot be written).
    """

    positions: torch.Tensor  # (B, L, 37, 3) Å, atom37 order
    atom_mask: torch.Tensor  # (B, L, 37), 1 for atoms that exist
    plddt: torch.Tensor  # (B, L) per residue (the CA atom's), 0–100
    mean_plddt: torch.Tensor  # (B,) mean over existing atoms, 0–100
    ptm: torch.Tensor  # (B,) one per sequence
    pae: torch.Tensor  # (B, L, L) Å; [b, i, j] = error of residue j aligned on residue i
    aatype: torch.Tensor  # (B, L) long, AF2 restype order, 20 = X
    residue_index: torch.Tensor  # (B, L) long, the residue index the trunk saw (chain offsets included)
    chain_index: torch.Tensor  # (B, L) long, 0, 1, ... per chain
    mask: torch.Tensor  # (B, L), 1 for residues of the input chains, 0 for padding and linkers
    sequences: list[str]  # the input sequences, chains separated by ":"
    atom_plddt: torch.Tensor | None = None  # (B, L, 37) per-atom pLDDT, 0–100 (written as PDB B-factors)
    distogram_logits: torch.Tensor | None = None  # (B, L, L, n_bins)
    random_weights: bool = False  # folded by a model of randomized weights (`esmfold-lite weights make-random`)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) long: number of residues of each input (all chains, linkers excluded)."""
        return self.mask.bool().sum(-1)

    def select(self, i: int) -> Prediction:
        """Sequence ``i`` alone (B = 1), keeping only its residues: padding and chain linkers are cut. Raises
        IndexError naming the number of sequences when there is no sequence ``i``."""
        count = len(self.sequences)
        if not -count <= i < count:
            raise IndexError(f"no sequence {i}: this prediction holds {count} (0 to {count - 1})")
        keep = self.mask[i].bool()

        def per_residue(x: torch.Tensor | None) -> torch.Tensor | None:  # (B, L, ...) -> (1, n, ...)
            return None if x is None else x[i][keep].unsqueeze(0)

        def per_pair(x: torch.Tensor | None) -> torch.Tensor | None:  # (B, L, L, ...) -> (1, n, n, ...)
            return None if x is None else x[i][keep][:, keep].unsqueeze(0)

        return Prediction(
            positions=per_residue(self.positions),
            atom_mask=per_residue(self.atom_mask),
            plddt=per_residue(self.plddt),
            mean_plddt=self.mean_plddt[i : i + 1],
            ptm=self.ptm[i : i + 1],
            pae=per_pair(self.pae),
            aatype=per_residue(self.aatype),
            residue_index=per_residue(self.residue_index),
            chain_index=per_residue(self.chain_index),
            mask=per_residue(self.mask),
            sequences=[self.sequences[i]],
            atom_plddt=per_residue(self.atom_plddt),
            distogram_logits=per_pair(self.distogram_logits),
            random_weights=self.random_weights,
        )

    @staticmethod
    def _residue_numbers(one: Prediction) -> torch.Tensor:
        """(n,) residue numbers of ``one`` (a ``select``ed prediction): from 1 within each chain, gaps kept."""
        residue_index, chain_index = one.residue_index[0], one.chain_index[0]
        first_in_chain = torch.zeros_like(residue_index)
        for c in chain_index.unique():
            in_chain = chain_index == c
            first_in_chain[in_chain] = residue_index[in_chain].min()
        return residue_index - first_in_chain + 1

    def to_atom_array(self, i: int = 0) -> struc.AtomArray:
        """Sequence ``i`` as a biotite AtomArray: chains "A", "B", ..., residues numbered from 1 within each chain
        (gaps in ``residue_index`` kept), pLDDT as B-factor (per atom when ``atom_plddt`` is set, as the original)."""
        one = self.select(i)
        return to_atom_array(
            positions=one.positions[0],
            atom_mask=one.atom_mask[0],
            aatype=one.aatype[0],
            residue_index=self._residue_numbers(one),
            chain_index=one.chain_index[0],
            b_factors=(one.plddt if one.atom_plddt is None else one.atom_plddt)[0],
        )

    def polymer_chains(self, i: int = 0) -> list[PolymerChain]:
        """The full sequence of each chain of sequence ``i`` as written to mmCIF (``entity_poly_seq``): residue names
        in ``to_atom_array``'s chains and numbering, unknown residues (``X B Z U O``, which have no atoms) "UNK"."""
        one = self.select(i)
        names = np.asarray(resnames)[one.aatype[0].cpu().numpy()]
        numbers = self._residue_numbers(one).cpu().numpy()
        chain_index = one.chain_index[0].cpu().numpy()
        return [
            PolymerChain(CHAIN_IDS[c], tuple(names[in_chain].tolist()), tuple(numbers[in_chain].tolist()))
            for c in np.unique(chain_index)
            for in_chain in [chain_index == c]
        ]

    def to_pdb(self, i: int = 0) -> str:
        """PDB text of sequence ``i`` (see ``to_atom_array``); from randomized weights, REMARK 250 says so."""
        return to_pdb_string(self.to_atom_array(i), random_weights=self.random_weights)

    def to_mmcif(self, i: int = 0, name: str = "esmfold_lite") -> str:
        """ModelCIF text of sequence ``i`` in data block ``name`` (see ``to_atom_array``): the model, its entities
        with their full sequences (``polymer_chains``, unknown residues included), the modeling protocol and the QA
        scores: pLDDT per residue (0–100, the CA atom's B-factor), mean pLDDT (0–100) and pTM (0–1); from randomized
        weights, the title and a remark say so."""
        scores = ModelScores(mean_plddt=float(self.mean_plddt[i]), ptm=float(self.ptm[i]))
        return to_mmcif_string(
            self.to_atom_array(i),
            name=name,
            scores=scores,
            chains=self.polymer_chains(i),
            random_weights=self.random_weights,
        )

    def __repr__(self) -> str:
        """One line per sequence (at most 10): residues, chains, mean pLDDT, pTM and the start of the sequence."""
        plural = "s" if len(self) != 1 else ""
        lines = [f"Prediction({len(self)} sequence{plural}, padded length {self.mask.shape[-1]})"]
        for i, sequence in enumerate(self.sequences[:10]):
            chains = sequence.count(":") + 1
            start = sequence if len(sequence) <= 30 else sequence[:29] + "…"
            lines.append(
                f"  [{i}] {int(self.lengths[i])} residue{'s' if int(self.lengths[i]) != 1 else ''}, "
                f"{chains} chain{'s' if chains != 1 else ''}, "
                f"mean pLDDT {float(self.mean_plddt[i]):.1f}, pTM {float(self.ptm[i]):.3f}: {start}"
            )
        if len(self) > 10:
            lines.append(f"  … {len(self) - 10} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Jupyter display: the scores and 3D views coloured by pLDDT (``esmfold_lite.viz``)."""
        from esmfold_lite.viz.view import prediction_html

        return prediction_html(self)
