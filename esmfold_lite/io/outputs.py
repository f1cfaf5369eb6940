"""Per-protein output files (PDB, mmCIF, confidence JSON, AlphaFold DB PAE JSON, NPZ, PAE/pLDDT PNG, contact-map
PNG) and ``summary.tsv``.

Every file is rendered in memory first (``render_protein``, which can run in another process) and then written
atomically (temporary file + rename) by ``write_files``, so a crash or a failing renderer never leaves a truncated
file behind. The rename replaces a symlink planted at an output path by the file itself: nothing is ever written
through a link. A prediction with nothing valid to write (no atom at all, or NaN/inf values) is refused with a
ValueError saying why, so no output holds NaN. The JSON uses ColabFold's names: ``plddt`` (per residue), ``ptm``,
``pae`` (L×L, row i = residues aligned on residue i) and ``max_pae``, plus ``mean_plddt``, the protein's ``id``,
FASTA ``header`` and ``notes`` (what ``summary.tsv``'s notes column says); it is strict JSON (a
non-finite number would be written ``null``, never ``NaN``). pLDDT is on a 0–100 scale in every file (B-factors,
the mmCIF's ModelCIF scores, JSON, NPZ); PAE is in Å.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from esmfold_lite.fold.config import ESMFoldConfig
from esmfold_lite.fold.heads import aligned_error_bin_centres
from esmfold_lite.io.atomic import atomic_path, atomic_write_bytes
from esmfold_lite.io.output_names import FORMAT_SUFFIXES
from esmfold_lite.io.tsv import escape_field, unescape_field
from esmfold_lite.prediction import Prediction

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "id", "length", "mean_plddt", "ptm", "status", "seconds", "error", "notes", "sequence_hash", "header",
)  # fmt: skip


def output_paths(outdir: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    """Where the files of protein ``name`` go: ``{format: OUTDIR/<name><suffix>}`` (``FORMAT_SUFFIXES``).

    ``name`` should come from ``unique_ids``; raises ValueError unless it is one plain path component, so that every
    path lies directly in ``outdir``. The last component is not resolved: a symlink there is replaced, not followed.
    """
    if not name or name in (".", "..") or "\0" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"output name {name!r} is not a plain file name")
    return {fmt: outdir / f"{name}{FORMAT_SUFFIXES[fmt]}" for fmt in formats}


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


def _json_numbers(values: np.ndarray | float, decimals: int) -> list | float | None:
    """Numbers rounded to ``decimals`` for JSON (nested lists for arrays); NaN and ±inf become None (``null``)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), decimals)  # float64: 0.1 prints as 0.1
    return np.where(np.isfinite(rounded), rounded, None).tolist()


def confidence_json(one: Prediction, name: str, header: str, notes: Sequence[str] = ()) -> str:
    """ColabFold-like confidence JSON of a single-sequence prediction (``Prediction.select`` output), with the
    protein's ``id``, FASTA ``header`` and ``notes`` (as ``summary.tsv``'s notes column, one string each).

    ``max_pae`` is the largest value in the ``pae`` matrix (ColabFold writes the head's upper bin edge there).
    ``"random_weights": true`` is added for a model of randomized weights (``esmfold-lite weights make-random``).
    The text is strict JSON: a non-finite number is written as ``null``.
    """
    pae = _numpy(one.pae[0])
    record = {
        "id": name,
        "header": header,
        "notes": list(notes),
        "sequence": one.sequences[0],
        "plddt": _json_numbers(_numpy(one.plddt[0]), 2),
        "mean_plddt": _json_numbers(float(one.mean_plddt[0]), 4),
        "ptm": _json_numbers(float(one.ptm[0]), 4),
        "max_pae": _json_numbers(pae.max(initial=0.0), 2),
        "pae": _json_numbers(pae, 2),
    }
    if one.random_weights:  # only then: the JSON of real weights stays as it was
        record["random_weights"] = True
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def max_predicted_aligned_error() -> float:
    """The largest PAE (Å) ESMFold's aligned-error head can give: the centre of its last bin, 31.75 Å for the
    ``ptm_bins`` (64) of the ESMFold checkpoints."""
    return float(aligned_error_bin_centres(no_bins=ESMFoldConfig().ptm_bins)[-1])


def afdb_pae_json(one: Prediction) -> str:
    """The PAE of a single-sequence prediction (``Prediction.select`` output) in AlphaFold DB's layout, compact:
    ``[{"predicted_aligned_error":[[...],...],"max_predicted_aligned_error":31.75}]``.

    As in AlphaFold DB's files, the values are Å rounded to the closest integer, row i holding the errors of the
    residues when the structure is aligned on residue i, and ``max_predicted_aligned_error`` is the largest value
    the model can give (unrounded; the function of that name). The PAE must be finite (``unwritable_reason``).
    """
    pae = np.rint(_numpy(one.pae[0])).astype(np.int64)
    record = [{"predicted_aligned_error": pae.tolist(), "max_predicted_aligned_error": max_predicted_aligned_error()}]
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


def confidence_png(one: Prediction, title: str) -> bytes:
    """Two panels as PNG bytes: pLDDT per residue (left) and the PAE matrix (right); chain boundaries are marked.

    Drawn by ``esmfold_lite.viz.plots`` with the Agg canvas (no pyplot state, no display needed).
    """
    from esmfold_lite.viz.plots import confidence_figure, figure_png

    figure = confidence_figure(
        _numpy(one.plddt[0]), _numpy(one.pae[0]), _numpy(one.chain_index[0]),
        mean_plddt=float(one.mean_plddt[0]), ptm=float(one.ptm[0]), title=title,
    )  # fmt: skip
    return figure_png(figure)


def contact_map_png(contacts, title: str) -> bytes:
    """A predicted contact map ``(L, L)`` (probabilities, tensor or array) as PNG bytes, residues numbered from 1.

    Same rendering as ``confidence_png``: matplotlib's object API on the Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from esmfold_lite.viz.plots import figure_png

    probabilities = _numpy(contacts) if hasattr(contacts, "detach") else np.asarray(contacts, dtype=np.float32)
    length = probabilities.shape[0]
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots()
    extent = (0.5, length + 0.5, length + 0.5, 0.5)
    image = axes.imshow(probabilities, cmap="Blues", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    axes.set(xlabel="residue", ylabel="residue", title=title)
    fig.colorbar(image, ax=axes, label="contact probability")
    fig.tight_layout()
    return figure_png(fig)


def render_protein(
    prediction: Prediction, i: int, name: str, formats: Sequence[str], header: str = "", notes: Sequence[str] = ()
) -> dict[str, bytes]:
    """The requested files of sequence ``i`` of ``prediction``, rendered in memory: ``{format: content}``; the JSON
    holds ``header`` and ``notes`` (``confidence_json``).

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
        "json": lambda: confidence_json(one, name, header, notes).encode(),
        "pae": lambda: afdb_pae_json(one).encode(),
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


def _tsv_field(value: object) -> str:
    """A value as one TSV field: None, NaN and ±inf → empty, floats rounded, text escaped (``io.tsv``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        value = f"{value:.4f}".rstrip("0")
        value += "0" if value.endswith(".") else ""
    return escape_field(str(value))


def write_summary(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    """Write ``rows`` (dicts keyed by ``SUMMARY_COLUMNS``) as a tab-separated table with a header, atomically; text
    such as a FASTA header is escaped by ``io.tsv``'s rule, so every row is one line of ``SUMMARY_COLUMNS`` fields.

    Rows are streamed to the file, so millions of them never sit in memory as text."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(SUMMARY_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(_tsv_field(row.get(column)) for column in SUMMARY_COLUMNS) + "\n")


def read_summary(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``summary.tsv`` (missing columns read as "", fields unescaped: ``io.tsv``); [] if the file
    does not exist.

    Rows without an id are skipped with a warning, so a hand-edited or foreign file does not stop a reader.
    """
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row.get("id"):
                logger.warning("%s line %d has no id; ignored", path, line)
                continue
            rows.append({column: unescape_field(row.get(column) or "") for column in SUMMARY_COLUMNS})
    return rows
