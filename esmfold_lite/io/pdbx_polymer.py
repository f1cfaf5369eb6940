"""The polymer description of a predicted model in PDBx/mmCIF, written for every mmCIF file (``add_polymer_categories``;
``io.modelcif`` adds the ModelCIF categories of a prediction):

- ``_entry``, ``_struct`` (title), ``_atom_type`` (the elements of ``atom_site``).
- ``_entity`` / ``_entity_poly`` / ``_entity_poly_seq``: one entity per distinct chain sequence (identical chains of a
  homo-oligomer share one, as in AlphaFold DB and ColabFold files), numbered 1, 2, ... in chain order; the full
  sequence of each, residues without atoms included. Unknown residues (``X``; ``B Z U O`` fold as unknown too) are
  ``UNK``: ``(UNK)`` in ``pdbx_seq_one_letter_code`` and ``X`` in ``pdbx_seq_one_letter_code_can``, the PDBx
  convention.
- ``_struct_asym``: one per chain (``label_asym_id`` = ``auth_asym_id`` = the chain letter), naming its entity;
  ``_pdbx_poly_seq_scheme`` maps each sequence position to its residue number, ``?`` where it has no atoms.
- ``_chem_comp``: the residues used, from the wwPDB Chemical Component Dictionary.
- ``atom_site.label_entity_id`` and ``label_seq_id`` point into those: ``label_seq_id`` is the residue's position in
  its chain's sequence (1, 2, ...), ``auth_seq_id`` its residue number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import biotite.structure as struc
import numpy as np
from biotite.structure.io import pdbx

from esmfold_lite.geometry.residue_constants import restype_1to3

# _chem_comp rows from the wwPDB Chemical Component Dictionary: id → (type, name, formula, formula weight)
CHEM_COMP: dict[str, tuple[str, str, str, str]] = {
    "ALA": ("L-peptide linking", "ALANINE", "C3 H7 N O2", "89.093"),
    "ARG": ("L-peptide linking", "ARGININE", "C6 H15 N4 O2", "175.209"),
    "ASN": ("L-peptide linking", "ASPARAGINE", "C4 H8 N2 O3", "132.118"),
    "ASP": ("L-peptide linking", "ASPARTIC ACID", "C4 H7 N O4", "133.103"),
    "CYS": ("L-peptide linking", "CYSTEINE", "C3 H7 N O2 S", "121.158"),
    "GLN": ("L-peptide linking", "GLUTAMINE", "C5 H10 N2 O3", "146.144"),
    "GLU": ("L-peptide linking", "GLUTAMIC ACID", "C5 H9 N O4", "147.129"),
    "GLY": ("peptide linking", "GLYCINE", "C2 H5 N O2", "75.067"),
    "HIS": ("L-peptide linking", "HISTIDINE", "C6 H10 N3 O2", "156.162"),
    "ILE": ("L-peptide linking", "ISOLEUCINE", "C6 H13 N O2", "131.173"),
    "LEU": ("L-peptide linking", "LEUCINE", "C6 H13 N O2", "131.173"),
    "LYS": ("L-peptide linking", "LYSINE", "C6 H15 N2 O2", "147.195"),
    "MET": ("L-peptide linking", "METHIONINE", "C5 H11 N O2 S", "149.211"),
    "PHE": ("L-peptide linking", "PHENYLALANINE", "C9 H11 N O2", "165.189"),
    "PRO": ("L-peptide linking", "PROLINE", "C5 H9 N O2", "115.130"),
    "SER": ("L-peptide linking", "SERINE", "C3 H7 N O3", "105.093"),
    "THR": ("L-peptide linking", "THREONINE", "C4 H9 N O3", "119.119"),
    "TRP": ("L-peptide linking", "TRYPTOPHAN", "C11 H12 N2 O2", "204.225"),
    "TYR": ("L-peptide linking", "TYROSINE", "C9 H11 N O3", "181.189"),
    "VAL": ("L-peptide linking", "VALINE", "C5 H11 N O2", "117.146"),
    "UNK": ("L-peptide linking", "UNKNOWN", "C4 H9 N O2", "103.120"),
}
ONE_LETTER = {three: one for one, three in restype_1to3.items()} | {"UNK": "X"}
SEQUENCE_LINE = 80  # longer one-letter sequences are written as a text field of lines of at most this many characters


@dataclass(frozen=True)
class PolymerChain:
    """One chain's full sequence: ``residues`` (names, e.g. "ALA", "UNK"; ``label_seq_id`` 1, 2, ...) and the
    residue number (``res_id`` / ``auth_seq_id``) of each, residues that have no atoms included."""

    chain_id: str
    residues: tuple[str, ...]
    numbers: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.residues or len(self.residues) != len(self.numbers):
            raise ValueError(f"chain {self.chain_id}: need one residue number per residue, and at least one residue")
        if len(set(self.numbers)) != len(self.numbers):
            raise ValueError(f"chain {self.chain_id}: residue numbers must be unique")
        unknown = sorted(set(self.residues) - set(CHEM_COMP))
        if unknown:
            raise ValueError(f"chain {self.chain_id}: residues {unknown} are not amino acids this writer knows")


def chains_from_atoms(atoms: struc.AtomArray) -> list[PolymerChain]:
    """The chains of ``atoms`` as far as they have atoms: each chain's residues in order, with their numbers."""
    starts = struc.get_residue_starts(atoms)
    chains: dict[str, tuple[list[str], list[int]]] = {}
    for start in starts:
        names, numbers = chains.setdefault(str(atoms.chain_id[start]), ([], []))
        names.append(str(atoms.res_name[start]))
        numbers.append(int(atoms.res_id[start]))
    return [PolymerChain(chain_id, tuple(names), tuple(numbers)) for chain_id, (names, numbers) in chains.items()]


def chain_entities(chains: Sequence[PolymerChain]) -> dict[tuple[str, ...], tuple[int, list[str]]]:
    """Distinct chain sequences → (entity id 1, 2, ... in order of first appearance, the chain ids with it)."""
    entities: dict[tuple[str, ...], tuple[int, list[str]]] = {}
    for chain in chains:
        entities.setdefault(chain.residues, (len(entities) + 1, []))[1].append(chain.chain_id)
    return entities


def label_ids(atoms: struc.AtomArray, chains: Sequence[PolymerChain]) -> tuple[np.ndarray, np.ndarray]:
    """``(label_entity_id, label_seq_id)`` of each atom. Raises ValueError if an atom's residue (chain, number, name)
    is not in ``chains`` or the chain ids repeat."""
    if len({chain.chain_id for chain in chains}) != len(chains):
        raise ValueError("chain ids must be unique")
    entity_of = {chain: entity_id for entity_id, chain_ids in chain_entities(chains).values() for chain in chain_ids}
    position = {(c.chain_id, number): (k + 1, name) for c in chains for k, (number, name) in
                enumerate(zip(c.numbers, c.residues, strict=True))}  # fmt: skip
    entity_ids = np.zeros(atoms.array_length(), np.int64)
    seq_ids = np.zeros(atoms.array_length(), np.int64)
    bounds = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        chain, number, name = str(atoms.chain_id[start]), int(atoms.res_id[start]), str(atoms.res_name[start])
        seq_id, expected = position.get((chain, number), (0, None))
        if expected != name or atoms.ins_code[start]:
            raise ValueError(f"residue {name} {number}{atoms.ins_code[start]} of chain {chain} is not in its sequence")
        entity_ids[start:stop], seq_ids[start:stop] = entity_of[chain], seq_id
    return entity_ids, seq_ids


def _column(values: Sequence, present: Sequence[bool], absent: pdbx.MaskValue) -> pdbx.CIFColumn:
    """``values`` where ``present``, else written "?" (MISSING) or "." (INAPPLICABLE)."""
    present = np.asarray(present, bool)
    strings = np.where(present, np.asarray([str(v) for v in values], dtype=object), "")
    return pdbx.CIFColumn(pdbx.CIFData(strings.astype(str)), np.where(present, pdbx.MaskValue.PRESENT, absent))


def inapplicable(n: int) -> pdbx.CIFColumn:
    """A column of ``n`` values written "." (inapplicable)."""
    return _column([""] * n, [False] * n, pdbx.MaskValue.INAPPLICABLE)


def _one_letter_code(residues: Sequence[str], canonical: bool) -> str:
    """``pdbx_seq_one_letter_code`` (non-standard residues as "(UNK)") or ``..._can`` ("X"), in lines of at most
    ``SEQUENCE_LINE`` characters when longer (a text field; readers join the lines), never splitting "(UNK)"."""
    codes = [ONE_LETTER[r] if canonical or r != "UNK" else f"({r})" for r in residues]
    lines, line = [], ""
    for code in codes:
        if len(line) + len(code) > SEQUENCE_LINE:
            lines.append(line)
            line = ""
        line += code
    return "\n".join([*lines, line])


def chain_description(name: str, chain_ids: Sequence[str]) -> str:
    """An entity's description: "NAME chain A" or "NAME chains A,B"."""
    return f"{name} chain{'s' if len(chain_ids) > 1 else ''} {','.join(chain_ids)}"


def add_polymer_categories(block: pdbx.CIFBlock, name: str, chains: Sequence[PolymerChain]) -> None:
    """Add ``_entry`` (id ``name``), ``_struct``, ``_chem_comp``, ``_entity``, ``_entity_poly``,
    ``_entity_poly_seq``, ``_struct_asym``, ``_pdbx_poly_seq_scheme`` and ``_atom_type`` (see the module) for
    ``chains`` to ``block``, whose ``atom_site`` holds their atoms with the ids of ``label_ids``."""
    atom_site = block["atom_site"]
    observed = set(zip(atom_site["label_asym_id"].as_array(str), atom_site["label_seq_id"].as_array(int), strict=True))
    entities = chain_entities(chains)
    block["entry"] = pdbx.CIFCategory({"id": [name]})
    block["struct"] = pdbx.CIFCategory({"entry_id": [name], "title": [f"ESMFold prediction of {name}"]})
    comps = sorted({residue for chain in chains for residue in chain.residues})
    block["chem_comp"] = pdbx.CIFCategory({
        "id": comps, **{key: [CHEM_COMP[c][k] for c in comps] for k, key in
                        enumerate(("type", "name", "formula", "formula_weight"))},
        "ma_provenance": ["CCD Core"] * len(comps),
    })  # fmt: skip
    ids = [entity_id for entity_id, _ in entities.values()]
    block["entity"] = pdbx.CIFCategory({
        "id": ids, "type": ["polymer"] * len(ids), "src_method": ["man"] * len(ids),
        "pdbx_description": [chain_description(name, chain_ids) for _, chain_ids in entities.values()],
        "pdbx_number_of_molecules": [len(chain_ids) for _, chain_ids in entities.values()],
    })  # fmt: skip
    block["entity_poly"] = pdbx.CIFCategory({
        "entity_id": ids, "type": ["polypeptide(L)"] * len(ids), "nstd_linkage": ["no"] * len(ids),
        "nstd_monomer": ["no"] * len(ids),
        "pdbx_seq_one_letter_code": [_one_letter_code(residues, canonical=False) for residues in entities],
        "pdbx_seq_one_letter_code_can": [_one_letter_code(residues, canonical=True) for residues in entities],
        "pdbx_strand_id": [",".join(chain_ids) for _, chain_ids in entities.values()],
    })  # fmt: skip
    seq = [(entity_id, k + 1, residue) for residues, (entity_id, _) in entities.items()
           for k, residue in enumerate(residues)]  # fmt: skip
    block["entity_poly_seq"] = pdbx.CIFCategory({
        "entity_id": [s[0] for s in seq], "num": [s[1] for s in seq], "mon_id": [s[2] for s in seq],
        "hetero": ["n"] * len(seq),
    })  # fmt: skip
    entity_of = {chain: entity_id for entity_id, chain_ids in entities.values() for chain in chain_ids}
    block["struct_asym"] = pdbx.CIFCategory({
        "id": [c.chain_id for c in chains], "entity_id": [entity_of[c.chain_id] for c in chains],
        "details": inapplicable(len(chains)),
    })  # fmt: skip
    scheme = [
        (c.chain_id, k + 1, residue, number, (c.chain_id, k + 1) in observed)
        for c in chains
        for k, (residue, number) in enumerate(zip(c.residues, c.numbers, strict=True))
    ]
    asym, seq_id, mon, number, seen = (list(column) for column in zip(*scheme, strict=True))
    missing = pdbx.MaskValue.MISSING
    block["pdbx_poly_seq_scheme"] = pdbx.CIFCategory({
        "asym_id": asym, "entity_id": [entity_of[a] for a in asym], "seq_id": seq_id, "mon_id": mon,
        "ndb_seq_num": seq_id, "pdb_seq_num": number, "auth_seq_num": _column(number, seen, missing),
        "pdb_mon_id": _column(mon, seen, missing), "auth_mon_id": _column(mon, seen, missing),
        "pdb_strand_id": asym, "pdb_ins_code": inapplicable(len(asym)), "hetero": ["n"] * len(asym),
    })  # fmt: skip
    block["atom_type"] = pdbx.CIFCategory({"symbol": sorted(set(atom_site["type_symbol"].as_array(str)))})
