"""The mmCIF categories of a predicted model beyond ``atom_site``: PDBx/mmCIF's polymer description and the ModelCIF
dictionary's (``mmcif_ma.dic``) model, protocol and quality-assessment categories.

The polymer description (PDBx/mmCIF: entities, sequences, chains) is ``io.pdbx_polymer``'s.

ModelCIF (``add_modelcif_categories``, for predictions, with their scores):

- ``_audit_conform``: the ModelCIF dictionary, ``MODELCIF_DICTIONARY``.
- ``_software`` / ``_ma_software_group`` (esmfold-lite), ``_ma_data`` (the model coordinates, id 1, then one target
  per entity), ``_ma_data_group`` (targets → group 1, model → group 2), ``_ma_target_entity`` (origin "designed":
  the sequences are the user's) / ``_ma_target_entity_instance`` (one per chain), ``_ma_protocol_step`` (one
  "modeling" step from group 1 to group 2) and ``_ma_model_list`` (ordinal = ``atom_site.pdbx_PDB_model_num``).
- QA scores, used as AlphaFold DB files use them: ``_ma_qa_metric`` declares each score: ``mode`` "local" (per
  residue) or "global" (per model), ``type`` from the dictionary's vocabulary ("pLDDT": predicted lDDT-Cα on a 0–100
  scale; "pTM": predicted TM-score on 0–1); ``_ma_qa_metric_global``: mean pLDDT (0–100, the mean over the model's
  atoms, as AlphaFold DB gives its mean pLDDT as a global pLDDT) and pTM (0–1); ``_ma_qa_metric_local``: one pLDDT
  (0–100) per residue with atoms.

ESMFold computes no ipTM, so none is written. The local rows are taken from the block's ``atom_site`` (the CA atom of
each residue; every residue ESMFold places atoms for has one), so their ``label_asym_id``, ``label_seq_id``,
``label_comp_id`` and value are exactly that residue's identifiers and B-factor in the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from biotite.structure.io import pdbx

from esmfold_lite.io.pdbx_polymer import PolymerChain, chain_description, chain_entities, inapplicable
from esmfold_lite.version import __version__

MODELCIF_DICTIONARY = {  # _audit_conform: the ModelCIF release whose categories and vocabularies this file follows
    "dict_name": "mmcif_ma.dic",
    "dict_version": "1.4.9",
    "dict_location": "https://raw.githubusercontent.com/ihmwg/ModelCIF/fece26d/dist/mmcif_ma.dic",
}
SOFTWARE_GROUP_ID = 1
MODEL_DATA_ID = 1  # _ma_data.id of the model coordinates; the target entities follow (2, 3, ...)
TARGET_DATA_GROUP_ID, MODEL_DATA_GROUP_ID = 1, 2  # _ma_data_group.group_id: the protocol's input and output
PLDDT_LOCAL_ID, PLDDT_GLOBAL_ID, PTM_ID = 1, 2, 3  # _ma_qa_metric.id
METRICS = {  # _ma_qa_metric rows: id → (name, description, type, mode)
    PLDDT_LOCAL_ID: ("pLDDT", "predicted lDDT-CA per residue, 0-100 (the B-factor of its CA atom)", "pLDDT", "local"),
    PLDDT_GLOBAL_ID: ("mean pLDDT", "mean predicted lDDT over all atoms of the model, 0-100", "pLDDT", "global"),
    PTM_ID: ("pTM", "predicted TM-score of the model, 0-1", "pTM", "global"),
}
RANDOM_WEIGHTS_REMARK = "RANDOM WEIGHTS: NOT A PREDICTION (esmfold-lite weights make-random)"
CATEGORY_ORDER = (  # the order of the categories in the data block; others follow in the order they were added
    "entry", "audit_conform", "struct", "software", "chem_comp", "entity", "entity_poly", "entity_poly_seq",
    "struct_asym", "pdbx_poly_seq_scheme", "ma_data", "ma_data_group", "ma_target_entity", "ma_target_entity_instance",
    "ma_software_group", "ma_protocol_step", "ma_model_list", "atom_type", "atom_site", "ma_qa_metric",
    "ma_qa_metric_global", "ma_qa_metric_local",
)  # fmt: skip


@dataclass(frozen=True)
class ModelScores:
    """The per-model scores of a prediction: ``mean_plddt`` on 0–100 (mean over its atoms), ``ptm`` on 0–1."""

    mean_plddt: float
    ptm: float


def _metadata(model_id: int, name: str, chains: Sequence[PolymerChain]) -> dict[str, pdbx.CIFCategory]:
    """The dictionary, software, data, protocol, model and metric declarations the score rows refer to."""
    entities = list(chain_entities(chains).values())
    target_data = [MODEL_DATA_ID + k for k in range(1, len(entities) + 1)]
    metric_ids = list(METRICS)
    metric_name, description, kind, mode = (list(column) for column in zip(*METRICS.values(), strict=True))
    return {
        "audit_conform": pdbx.CIFCategory({key: [value] for key, value in MODELCIF_DICTIONARY.items()}),
        "software": pdbx.CIFCategory({
            "pdbx_ordinal": [1], "name": ["esmfold-lite"], "classification": ["model building"],
            "description": ["ESMFold structure prediction in pure PyTorch"], "version": [__version__],
            "type": ["package"],
        }),
        "ma_software_group": pdbx.CIFCategory({"ordinal_id": [1], "group_id": [SOFTWARE_GROUP_ID], "software_id": [1]}),
        "ma_data": pdbx.CIFCategory({
            "id": [MODEL_DATA_ID, *target_data], "name": ["Model", *(chain_description(name, c) for _, c in entities)],
            "content_type": ["model coordinates", *["target"] * len(entities)],
            "content_type_other_details": inapplicable(len(entities) + 1),
        }),
        "ma_data_group": pdbx.CIFCategory({
            "ordinal_id": list(range(1, len(entities) + 2)),
            "group_id": [TARGET_DATA_GROUP_ID] * len(entities) + [MODEL_DATA_GROUP_ID],
            "data_id": [*target_data, MODEL_DATA_ID],
        }),
        "ma_target_entity": pdbx.CIFCategory({
            "entity_id": [entity_id for entity_id, _ in entities], "data_id": target_data,
            "origin": ["designed"] * len(entities),
        }),
        "ma_target_entity_instance": pdbx.CIFCategory({
            "asym_id": [c.chain_id for c in chains],
            "entity_id": [entity_id for c in chains for entity_id, ids in entities if c.chain_id in ids],
            "details": inapplicable(len(chains)),
        }),
        "ma_protocol_step": pdbx.CIFCategory({
            "ordinal_id": [1], "protocol_id": [1], "step_id": [1], "method_type": ["modeling"],
            "step_name": ["ESMFold"],
            "details": ["structure predicted from the sequence alone by ESMFold (ESM-2 language model and folding "
                        "trunk; no multiple sequence alignment, no templates)"],
            "software_group_id": [SOFTWARE_GROUP_ID], "input_data_group_id": [TARGET_DATA_GROUP_ID],
            "output_data_group_id": [MODEL_DATA_GROUP_ID],
        }),
        "ma_model_list": pdbx.CIFCategory({
            "ordinal_id": [model_id], "model_id": [model_id], "model_group_id": [1], "model_name": ["ESMFold model"],
            "model_group_name": ["ESMFold"], "data_id": [MODEL_DATA_ID], "model_type": ["Ab initio model"],
            "model_type_other_details": inapplicable(1),
        }),
        "ma_qa_metric": pdbx.CIFCategory({
            "id": metric_ids, "name": metric_name, "description": description, "type": kind, "mode": mode,
            "type_other_details": inapplicable(len(METRICS)), "software_group_id": [SOFTWARE_GROUP_ID] * len(METRICS),
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


def add_modelcif_categories(
    block: pdbx.CIFBlock, name: str, chains: Sequence[PolymerChain], scores: ModelScores
) -> None:
    """Add the ModelCIF categories (see the module) to ``block``, which holds ``add_polymer_categories``' categories
    for ``chains`` and a single-model ``atom_site`` with pLDDT (0–100) as ``B_iso_or_equiv``. Mean pLDDT is written
    with 2 decimals, as the B-factors, pTM with 4."""
    atom_site = block["atom_site"]
    model_id = int(atom_site["pdbx_PDB_model_num"].as_array(int)[0])
    for category_name, category in _metadata(model_id, name, chains).items():
        block[category_name] = category
    block["ma_qa_metric_global"] = pdbx.CIFCategory({
        "ordinal_id": [1, 2], "model_id": [model_id] * 2, "metric_id": [PLDDT_GLOBAL_ID, PTM_ID],
        "metric_value": [f"{scores.mean_plddt:.2f}", f"{scores.ptm:.4f}"],
    })  # fmt: skip
    block["ma_qa_metric_local"] = _local_plddt(atom_site, model_id)


def mark_random_weights(block: pdbx.CIFBlock, name: str) -> None:
    """Say in ``block`` that its model came from randomized weights (``esmfold-lite weights make-random``): the
    ``_struct.title`` begins with `RANDOM_WEIGHTS_REMARK`, and ``_pdbx_database_remark`` 250 (PDBx's free-text remark,
    as REMARK 250 in the PDB file) holds it."""
    block["struct"]["title"] = [f"{RANDOM_WEIGHTS_REMARK}: {name}"]
    block["pdbx_database_remark"] = pdbx.CIFCategory({"id": [250], "text": [RANDOM_WEIGHTS_REMARK]})


def ordered(block: pdbx.CIFBlock) -> pdbx.CIFBlock:
    """``block`` with its categories in ``CATEGORY_ORDER`` (others after them, as they were)."""
    rank = {category: k for k, category in enumerate(CATEGORY_ORDER)}
    names = sorted(block.keys(), key=lambda category: rank.get(category, len(rank)))
    return pdbx.CIFBlock({category: block[category] for category in names})
