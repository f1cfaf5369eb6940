"""Per-protein output files (PDB, mmCIF, confidence JSON, NPZ, PAE/pLDDT PNG) and the run's ``summary.tsv``.

Every file is rendered in memory first and then written atomically (temporary file + rename), so a crash or a
failing renderer never leaves a truncated file behind. The JSON uses ColabFold's names: ``plddt`` (per residue),
``ptm``, ``pae`` (L×L, row i = residues aligned on residue i) and ``max_pae``, plus ``mean_plddt``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from esmfold_lite.io.atomic import atomic_write_bytes, atomic_write_text
from esmfold_lite.io.fasta import resolve_inside
from esmfold_lite.prediction import Prediction

logger = logging.getLogger(__name__)

FORMAT_SUFFIXES: dict[str, str] = {"pdb": ".pdb", "cif": ".cif", "json": ".json", "npz": ".npz", "png": ".png"}
SUMMARY_COLUMNS: tuple[str, ...] = (
    "id", "length", "mean_plddt", "ptm", "status", "seconds", "error", "notes", "sequence_hash",
)  # fmt: skip


def output_paths(outdir: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    """Where the files of protein ``name`` go: ``{format: OUTDIR/<name><suffix>}``.

    ``name`` should come from ``unique_ids``; raises ValueError if a path would still leave ``outdir``.
    """
    return {fmt: resolve_inside(outdir, f"{name}{FORMAT_SUFFIXES[fmt]}") for fmt in formats}


def _numpy(x) -> np.ndarray:
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x).numpy()


def confidence_json(one: Prediction, name: str, header: str) -> str:
    """ColabFold-like confidence JSON of a single-sequence prediction (``Prediction.select`` output).

    ``max_pae`` is the largest value in the ``pae`` matrix (ColabFold writes the head's upper bin edge there).
    """
    pae = _numpy(one.pae[0])
    record = {
        "id": name,
        "header": header,
        "sequence": one.sequences[0],
        "plddt": np.round(_numpy(one.plddt[0]), 2).tolist(),
        "mean_plddt": round(float(one.mean_plddt[0]), 4),
        "ptm": round(float(one.ptm[0]), 4),
        "max_pae": round(float(pae.max(initial=0.0)), 2),
        "pae": np.round(pae, 2).tolist(),
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


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


def write_protein(
    outdir: Path, name: str, prediction: Prediction, i: int, formats: Sequence[str], header: str = ""
) -> list[Path]:
    """Write the requested files of sequence ``i`` of ``prediction`` as ``OUTDIR/<name>.<format>``.

    Each file is rendered completely before it is written atomically. ``name`` must be a safe file stem (see
    ``esmfold_lite.io.fasta.safe_filename``). Returns the paths written, in ``formats`` order.
    """
    one = prediction.select(i)
    renderers = {
        "pdb": lambda: one.to_pdb(0),
        "cif": lambda: one.to_mmcif(0, name=name),
        "json": lambda: confidence_json(one, name, header),
        "npz": lambda: arrays_npz(one),
        "png": lambda: confidence_png(one, name),
    }
    written = []
    for fmt, path in output_paths(outdir, name, formats).items():
        content = renderers[fmt]()
        if isinstance(content, bytes):
            atomic_write_bytes(path, content)
        else:
            atomic_write_text(path, content)
        written.append(path)
    return written


def _tsv_field(value: object) -> str:
    """A value as one TSV field: None → empty, floats rounded, tabs and line breaks replaced by spaces."""
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:.4f}".rstrip("0")
        value += "0" if value.endswith(".") else ""
    return " ".join(str(value).split())


def write_summary(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    """Write ``rows`` (dicts keyed by ``SUMMARY_COLUMNS``) as a tab-separated table with a header, atomically."""
    lines = ["\t".join(SUMMARY_COLUMNS)]
    lines += ["\t".join(_tsv_field(row.get(column)) for column in SUMMARY_COLUMNS) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_summary(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``summary.tsv`` (missing columns read as ""); [] if the file does not exist.

    Rows without an id are skipped with a warning, so a hand-edited or foreign file does not stop a run.
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
            rows.append({column: row.get(column) or "" for column in SUMMARY_COLUMNS})
    return rows
