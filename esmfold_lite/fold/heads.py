"""Confidence heads: logits → pLDDT, pTM and predicted aligned error (PAE).

The layers that produce the logits live in the ESMFold assembly; this file holds only the math that turns them
into numbers, following the original ESMFold:

- pLDDT: the lddt head predicts, for each of the 37 atoms of each residue, a categorical distribution over
  ``n_bins`` equal bins of [0, 1]; pLDDT is its expectation (bin centres), times 100.
  The per-residue value is the CA atom's pLDDT (AlphaFold's per-residue pLDDT is a CA lDDT) and the
  sequence-level ``mean_plddt`` is the mean over every existing atom, as fair-esm's ``infer`` computes it.
- PAE / pTM (AlphaFold2 supplement 1.9.7): the ptm head predicts, for every residue pair (i, j), a distribution over
  the error of residue j's position when aligned on residue i's frame, in ``no_bins`` bins whose edges are
  ``linspace(0, max_bin, no_bins - 1)`` Å. PAE is the expected error; pTM is the best over alignment frames i of the
  mean TM-score term over residues j.

All functions compute in at least fp32 and return fp32 for half-precision inputs. ``categorical_mean`` and
``expected_tm_term`` are also ESMFold2's (``esmfold2/confidence_scores.py``), whose bins are equal bins of [0, 32].
"""

from __future__ import annotations

import torch

CA_ATOM37_INDEX = 1  # atom37 order: N, CA, C, CB, O, ...


def _as_float(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def plddt_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Expected lDDT in 0–100.

    Args:
        logits: (..., n_bins) over equal bins of [0, 1], e.g. the lddt head output (B, L, 37, 50).
    Returns:
        (...,) pLDDT, 0–100.
    """
    return 100 * categorical_mean(logits, 0.0, 1.0)


def equal_bin_centres(start: float, end: float, n_bins: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of ``n_bins`` equal bins spanning [start, end] → (n_bins,)."""
    edges = torch.linspace(start, end, n_bins + 1, device=device, dtype=dtype)
    return (edges[:-1] + edges[1:]) / 2


def categorical_mean(logits: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """Expected value of a categorical distribution over equal bins of [start, end].

    Args:
        logits: (..., n_bins).
    Returns:
        (...,), at least fp32.
    """
    logits = _as_float(logits)
    return logits.softmax(-1) @ equal_bin_centres(start, end, logits.shape[-1], logits.device, logits.dtype)


def residue_plddt(atom_plddt: torch.Tensor) -> torch.Tensor:
    """Per-residue pLDDT = the CA atom's pLDDT.

    Args:
        atom_plddt: (..., L, 37) per-atom pLDDT.
    Returns:
        (..., L).
    """
    return atom_plddt[..., CA_ATOM37_INDEX]


def mean_plddt(atom_plddt: torch.Tensor, atom_mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level pLDDT: the mean of per-atom pLDDT over existing atoms (as the original ``infer``).

    Args:
        atom_plddt: (B, L, 37).
        atom_mask: (B, L, 37), 1 for atoms that exist (0 on padding and chain linkers).
    Returns:
        (B,).
    """
    atom_mask = atom_mask.to(atom_plddt.dtype)
    return (atom_plddt * atom_mask).sum(dim=(-2, -1)) / atom_mask.sum(dim=(-2, -1))


def aligned_error_bin_centres(max_bin: int = 31, no_bins: int = 64, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres (Å) of the PAE bins: edges ``linspace(0, max_bin, no_bins - 1)``, plus one bin beyond the last edge.

    Returns:
        (no_bins,). The last value is the largest PAE the head can express.
    """
    edges = torch.linspace(0, max_bin, no_bins - 1, device=device, dtype=dtype)
    step = edges[1] - edges[0]
    centres = edges + step / 2
    return torch.cat([centres, centres[-1:] + step])


def aligned_error_probs(logits: torch.Tensor) -> torch.Tensor:
    """Per-pair distribution over aligned-error bins: softmax of (B, L, L, no_bins) logits."""
    return _as_float(logits).softmax(-1)


def pae_from_logits(logits: torch.Tensor, max_bin: int = 31, no_bins: int = 64) -> torch.Tensor:
    """Expected aligned error (Å).

    Args:
        logits: (B, L, L, no_bins) ptm head output; [b, i, j] is the error of residue j aligned on residue i.
    Returns:
        (B, L, L) PAE in Å.
    """
    probs = aligned_error_probs(logits)
    return probs @ aligned_error_bin_centres(max_bin, no_bins, device=probs.device, dtype=probs.dtype)


def ptm_from_logits(
    logits: torch.Tensor, mask: torch.Tensor, max_bin: int = 31, no_bins: int = 64, eps: float = 1e-8
) -> torch.Tensor:
    """Predicted TM-score, one per sequence, each over that sequence's own residues.

    For a sequence of N residues (those with ``mask`` 1), with d0 = 1.24 * (max(N, 19) - 15)^(1/3) - 1.8:
    pTM = max_i  sum_j  mask_j * E_bins[1 / (1 + (e_ij / d0)^2)] / N,  over residues i with ``mask`` 1.
    Padding therefore changes nothing: a padded sequence gets the pTM it has alone.

    Args:
        logits: (B, L, L, no_bins) ptm head output.
        mask: (B, L), 1 for residues the trunk saw (chain linkers included, as in the original), 0 for padding.
    Returns:
        (B,) pTM in [0, 1].
    """
    return best_frame_ptm(ptm_per_frame(logits, mask, max_bin, no_bins, eps), mask)


def ptm_per_frame(
    logits: torch.Tensor, mask: torch.Tensor, max_bin: int = 31, no_bins: int = 64, eps: float = 1e-8
) -> torch.Tensor:
    """The TM-score term of ``ptm_from_logits`` for alignment frames i: sum_j mask_j * E[tm(e_ij)] / N.

    Args:
        logits: (B, I, L, no_bins) ptm head output for frames i (all of them, or a chunk of rows).
        mask: (B, L) over all residues j.
    Returns:
        (B, I).
    """
    probs = aligned_error_probs(logits)
    mask = mask.to(probs.dtype)
    centres = aligned_error_bin_centres(max_bin, no_bins, device=probs.device, dtype=probs.dtype)
    n = mask.sum(-1)  # (B,)
    tm_term = expected_tm_term(probs, centres, n)  # (B, I, L)
    return (tm_term * (mask / (eps + n[:, None]))[:, None, :]).sum(-1)


def expected_tm_term(probs: torch.Tensor, centres: torch.Tensor, num_residues: torch.Tensor) -> torch.Tensor:
    """The TM-score term E_bins[1 / (1 + (e_ij / d0)^2)] of each pair, d0 = 1.24 * (max(N, 19) - 15)^(1/3) - 1.8.

    Args:
        probs: (B, I, L, no_bins) aligned-error distributions.
        centres: (no_bins,) bin centres in Å.
        num_residues: (B,) N, the residue count of each sequence.
    Returns:
        (B, I, L).
    """
    d0 = 1.24 * (num_residues.clamp(min=19) - 15) ** (1.0 / 3) - 1.8
    tm_per_bin = 1.0 / (1 + centres**2 / d0[:, None] ** 2)  # (B, no_bins)
    return (probs * tm_per_bin[:, None, None, :]).sum(-1)


def best_frame_ptm(per_frame: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pTM = the best ``ptm_per_frame`` (B, L) over frames i of residues with ``mask`` 1 → (B,)."""
    return per_frame.masked_fill(mask == 0, float("-inf")).amax(-1)
