"""The confidence files of a folded protein: ColabFold-like confidence JSON (``<id>.json``) and AlphaFold DB's PAE
JSON (``<id>_predicted_aligned_error_v1.json``), written from plain arrays; the PAE file is read back too.

The confidence JSON uses ColabFold's names: ``plddt`` (per residue), ``ptm``, ``pae`` (L×L, row i = residues aligned
on residue i) and ``max_pae``, plus ``mean_plddt``, the protein's ``id``, FASTA ``header`` and ``notes`` (what
``summary.tsv``'s notes column says); it is strict JSON (a non-finite number is written ``null``, never ``NaN``).
pLDDT is on a 0–100 scale, PAE in Å.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _json_numbers(values: np.ndarray | float, decimals: int) -> list | float | None:
    """Numbers rounded to ``decimals`` for JSON (nested lists for arrays); NaN and ±inf become None (``null``)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), decimals)  # float64: 0.1 prints as 0.1
    return np.where(np.isfinite(rounded), rounded, None).tolist()


def confidence_json(
    *,
    name: str,
    header: str,
    notes: Sequence[str],
    sequence: str,
    plddt: np.ndarray,
    mean_plddt: float,
    ptm: float,
    pae: np.ndarray,
    random_weights: bool = False,
) -> str:
    """ColabFold-like confidence JSON of one protein: ``plddt`` (L,) 0–100, ``pae`` (L, L) Å, its ``id`` (``name``),
    FASTA ``header`` and ``notes`` (as ``summary.tsv``'s notes column, one string each).

    ``max_pae`` is the largest value in the ``pae`` matrix (ColabFold writes the head's upper bin edge there).
    ``"random_weights": true`` is added for a model of randomized weights (``esmfold-lite weights make-random``).
    The text is strict JSON: a non-finite number is written as ``null``.
    """
    record = {
        "id": name,
        "header": header,
        "notes": list(notes),
        "sequence": sequence,
        "plddt": _json_numbers(plddt, 2),
        "mean_plddt": _json_numbers(mean_plddt, 4),
        "ptm": _json_numbers(ptm, 4),
        "max_pae": _json_numbers(pae.max(initial=0.0), 2),
        "pae": _json_numbers(pae, 2),
    }
    if random_weights:  # only then: the JSON of real weights stays as it was
        record["random_weights"] = True
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def afdb_pae_json(pae: np.ndarray, max_pae: float) -> str:
    """A PAE matrix ``(L, L)`` (Å, finite) in AlphaFold DB's layout, compact:
    ``[{"predicted_aligned_error":[[...],...],"max_predicted_aligned_error":31.75}]``.

    As in AlphaFold DB's files, the values are Å rounded to the closest integer, row i holding the errors of the
    residues when the structure is aligned on residue i, and ``max_predicted_aligned_error`` is ``max_pae``, the
    largest value the model can give (unrounded).
    """
    rounded = np.rint(pae).astype(np.int64)
    record = [{"predicted_aligned_error": rounded.tolist(), "max_predicted_aligned_error": max_pae}]
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def read_afdb_pae(path: str | os.PathLike) -> np.ndarray:
    """The (L, L) PAE in Å of an AlphaFold DB PAE JSON file (``afdb_pae_json``, or one from AlphaFold DB).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON of that layout with a square matrix.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        pae = np.asarray(data[0]["predicted_aligned_error"], dtype=float)
    except (KeyError, IndexError, TypeError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(
            f'{path}: not an AlphaFold DB PAE file ([{{"predicted_aligned_error": [[...]], ...}}])'
        ) from None
    if pae.ndim != 2 or pae.shape[0] != pae.shape[1]:
        raise ValueError(f"{path}: the PAE is not a square matrix (shape {pae.shape})")
    return pae
