"""ModelCIF quality-assessment categories of a predicted model: pLDDT per residue, mean pLDDT and pTM.

The categories are those of the ModelCIF dictionary (``mmcif_ma.dic``), used as AlphaFold DB files use them:

- ``_ma_qa_metric`` declares each score: ``mode`` "local" (per residue) or "global" (per model), ``type`` from the
  dictionary's vocabulary ("pLDDT": predicted lDDT-Cα on a 0–100 scale; "pTM": predicted TM-score on 0–1).
- ``_ma_qa_metric_global``: mean pLDDT (0–100, the mean over the model's atoms, as AlphaFold DB gives its mean
  pLDDT as a global pLDDT) and pTM (0–1), per model.
- ``_ma_qa_metric_local``: one pLDDT (0–100) per residue.
- What those refer to, kept minimal: ``_software`` and ``_ma_software_group`` (esmfold-lite computed the scores),
  ``_ma_data`` and ``_ma_model_list`` (the model, numbered as ``atom_site.pdbx_PDB_model_num``).

ESMFold computes no ipTM, so none is written. The local rows are taken from the block's ``atom_site`` (the CA atom of
each residue; every residue ESMFold places atoms for has one), so their ``label_asym_id``, ``label_seq_id``,
``label_comp_id`` and value are exactly that residue's identifiers and B-factor in the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from biotite.structure.io import pdbx

SOFTWARE_GROUP_ID = 1
DATA_ID = 1
PLDDT_LOCAL_ID, PLDDT_GLOBAL_ID, PTM_ID = 1, 2, 3  # _ma_qa_metric.id
METRICS = {  # _ma_qa_metric rows: id → (name, description, type, mode)
    PLDDT_LOCAL_ID: ("pLDDT", "predicted lDDT-CA per residue, 0-100 (the B-factor of its CA atom)", "pLDDT", "local"),
    PLDDT_GLOBAL_ID: ("mean pLDDT", "mean predicted lDDT over all atoms of the model, 0-100", "pLDDT", "global"),
    PTM_ID: ("pTM", "predicted TM-score of the model, 0-1", "pTM", "global"),
}


@dataclass(frozen=True)
class ModelScores:
    """The per-model scores of a prediction: ``mean_plddt`` on 0–100 (mean over its atoms), ``ptm`` on 0–1."""

    mean_plddt: float
    ptm: float


def _inapplicable(n: int) -> pdbx.CIFColumn:
    """A column of ``n`` values written "." (inapplicable)."""
    return pdbx.CIFColumn(pdbx.CIFData([""] * n), np.full(n, pdbx.MaskValue.INAPPLICABLE))


def _metadata(model_id: int) -> dict[str, pdbx.CIFCategory]:
    """The software, data, model and metric declarations the score rows refer to."""
    from esmfold_lite import __version__  # late: the package's __init__ imports this module

    metric_ids = list(METRICS)
    name, description, kind, mode = (list(column) for column in zip(*METRICS.values(), strict=True))
    return {
        "software": pdbx.CIFCategory({
            "pdbx_ordinal": [1], "name": ["esmfold-lite"], "classification": ["model building"],
            "description": ["ESMFold structure prediction in pure PyTorch"], "version": [__version__],
            "type": ["package"],
        }),
        "ma_software_group": pdbx.CIFCategory({"ordinal_id": [1], "group_id": [SOFTWARE_GROUP_ID], "software_id": [1]}),
        "ma_data": pdbx.CIFCategory({
            "id": [DATA_ID], "name": ["Model"], "content_type": ["model coordinates"],
            "content_type_other_details": _inapplicable(1),
        }),
        "ma_model_list": pdbx.CIFCategory({
            "ordinal_id": [1], "model_id": [model_id], "model_group_id": [1], "model_name": ["ESMFold model"],
            "model_group_name": ["ESMFold"], "data_id": [DATA_ID], "model_type": ["Ab initio model"],
            "model_type_other_details": _inapplicable(1),
        }),
        "ma_qa_metric": pdbx.CIFCategory({
            "id": metric_ids, "name": name, "description": description, "type": kind, "mode": mode,
            "type_other_details": _inapplicable(len(METRICS)), "software_group_id": [SOFTWARE_GROUP_ID] * len(METRICS),
        }),
    }  # fmt: skip


def _local_plddt(atom_site: pdbx.CIFCategory, model_id: int) -> pdbx.CIFCategory:
    """One ``_ma_qa_metric_local`` row per residue: the identifiers and B-factor (pLDDT) of its CA atom."""
    ca = atom_site["label_atom_id"].as_array() == "CA"
    n = int(ca.sum())
    return pdbx.CIFCategory({
        "ordinal_id": np.arange(1, n + 1),
        "model_id": np.full(n, model_id),
        **{key: atom_site[key].as_array()[ca] for key in ("label_asym_id", "label_seq_id", "label_comp_id")},
        "metric_id": np.full(n, PLDDT_LOCAL_ID),
        "metric_value": atom_site["B_iso_or_equiv"].as_array()[ca],
    })  # fmt: skip


def add_qa_categories(block: pdbx.CIFBlock, scores: ModelScores) -> None:
    """Add the ModelCIF QA categories (see the module) to ``block``, whose single-model ``atom_site`` holds pLDDT
    (0–100) as ``B_iso_or_equiv``. Mean pLDDT is written with 2 decimals, as the B-factors, pTM with 4."""
    atom_site = block["atom_site"]
    model_id = int(atom_site["pdbx_PDB_model_num"].as_array(int)[0])
    for name, category in _metadata(model_id).items():
        block[name] = category
    block["ma_qa_metric_global"] = pdbx.CIFCategory({
        "ordinal_id": [1, 2], "model_id": [model_id] * 2, "metric_id": [PLDDT_GLOBAL_ID, PTM_ID],
        "metric_value": [f"{scores.mean_plddt:.2f}", f"{scores.ptm:.4f}"],
    })  # fmt: skip
    block["ma_qa_metric_local"] = _local_plddt(atom_site, model_id)
