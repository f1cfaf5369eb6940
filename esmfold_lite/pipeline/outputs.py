"""Per-protein output files (PDB, mmCIF, confidence JSON, AlphaFold DB PAE JSON, NPZ, PAE/pLDDT PNG) of a
``Prediction``, rendered in memory and written into OUTDIR.

Every file is rendered in memory first (``render_protein``, which can run in another process) and then written
atomically (temporary file + rename) by ``write_files``, so a crash or a failing renderer never leaves a truncated
file behind. The rename replaces a symlink planted at an output path by the file itself: nothing is ever written
through a link. A prediction with nothing valid to write (no atom at all, or NaN/inf values) is refused with a
ValueError saying why, so no output holds NaN. The formats are ``io``'s (``io.structure``, ``io.confidence``), the
PNG ``viz.plots``'s; pLDDT is on a 0–100 scale in every file (B-factors, the mmCIF's ModelCIF scores, JSON, NPZ);
PAE is in Å.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from esmfold_lite.fold.config import ESMFoldConfig
from esmfold_lite.fold.heads import aligned_error_bin_centres
from esmfold_lite.io.atomic import atomic_write_bytes
from esmfold_lite.io.confidence import afdb_pae_json, confidence_json
from esmfold_lite.io.output_names import FORMAT_SUFFIXES, output_paths
from esmfold_lite.prediction import Prediction
from esmfold_lite.viz.plots import confidence_png


def _numpy(x) -> np.ndarray:
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x).numpy()


def unwritable_reason(one: Prediction) -> str | None:
    """Why a single-sequence prediction (``Prediction.select`` output) has nothing valid to write, or None."""
    exists = one.atom_mask[0].bool()
    if not exists.any():
        return (
            "the prediction has no atoms: every residue is unknown (X, B, Z, U or O), and ESMFold places no atoms "
            "for unknown residues; give at least one standard amino acid"
        )
    values = {
        "atom coordinates": one.positions[0][exists],
        "pLDDT": one.plddt[0],
        "mean pLDDT": one.mean_plddt[0],
        "pTM": one.ptm[0],
        "PAE": one.pae[0],
    }
    broken = [what for what, value in values.items() if not torch.isfinite(value).all()]
    if broken:
        return (
            f"the prediction holds NaN or infinite values ({', '.join(broken)}), likely a numerical overflow in "
            "reduced precision; fold it in float32"
        )
    return None


def max_predicted_aligned_error() -> float:
    """The largest PAE (Å) ESMFold's aligned-error head can give: the centre of its last bin, 31.75 Å for the
    ``ptm_bins`` (64) of the ESMFold checkpoints."""
    return float(aligned_error_bin_centres(no_bins=ESMFoldConfig().ptm_bins)[-1])


def confidence_text(one: Prediction, name: str, header: str, notes: Sequence[str] = ()) -> str:
    """The confidence JSON (``io.confidence.confidence_json``) of a single-sequence prediction (``Prediction.select``
    output), with the protein's ``id``, FASTA ``header`` and ``notes``."""
    return confidence_json(
        name=name, header=header, notes=notes, sequence=one.sequences[0], plddt=_numpy(one.plddt[0]),
        mean_plddt=float(one.mean_plddt[0]), ptm=float(one.ptm[0]), pae=_numpy(one.pae[0]),
        random_weights=one.random_weights,
    )  # fmt: skip


def arrays_npz(one: Prediction) -> bytes:
    """The arrays of a single-sequence prediction as compressed NPZ bytes (batch dimension dropped)."""
    arrays = {
        key: _numpy(getattr(one, key)[0])
        for key in ("positions", "atom_mask", "plddt", "pae", "aatype", "residue_index", "chain_index")
    }
    arrays["mean_plddt"] = _numpy(one.mean_plddt[0])
    arrays["ptm"] = _numpy(one.ptm[0])
    arrays["sequence"] = np.asarray(one.sequences[0])
    if one.atom_plddt is not None:
        arrays["atom_plddt"] = _numpy(one.atom_plddt[0])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def render_protein(
    prediction: Prediction, i: int, name: str, formats: Sequence[str], header: str = "", notes: Sequence[str] = ()
) -> dict[str, bytes]:
    """The requested files of sequence ``i`` of ``prediction``, rendered in memory: ``{format: content}``; the JSON
    holds ``header`` and ``notes`` (``confidence_text``).

    Raises:
        ValueError: the prediction has nothing valid to write (`unwritable_reason`).
    """
    one = prediction.select(i)
    reason = unwritable_reason(one)
    if reason is not None:
        raise ValueError(reason)
    renderers = {
        "pdb": lambda: one.to_pdb(0).encode(),
        "cif": lambda: one.to_mmcif(0, name=name).encode(),
        "json": lambda: confidence_text(one, name, header, notes).encode(),
        "pae": lambda: afdb_pae_json(_numpy(one.pae[0]), max_predicted_aligned_error()).encode(),
        "npz": lambda: arrays_npz(one),
        "png": lambda: confidence_png(one, name),
    }
    return {fmt: renderers[fmt]() for fmt in formats}


def write_files(outdir: Path, name: str, files: Mapping[str, bytes]) -> dict[str, Path]:
    """Write rendered files (``render_protein``) atomically as ``OUTDIR/<name><suffix>`` (``output_paths``); returns
    their paths. The protein's files of the other formats, left by an earlier fold of it (other settings, another
    sequence under the same id), are removed afterwards: every file of a protein comes from one fold."""
    paths = output_paths(outdir, name, list(files))
    for fmt, content in files.items():
        atomic_write_bytes(paths[fmt], content)
    for path in output_paths(outdir, name, [fmt for fmt in FORMAT_SUFFIXES if fmt not in files]).values():
        path.unlink(missing_ok=True)
    return paths
