"""Atom37 arrays → biotite ``AtomArray`` → PDB / mmCIF text, and reading structure files back.

Biotite writes the fixed PDB columns and the mmCIF ``atom_site`` category; this module adds what biotite leaves out
of PDB files (``TER`` after each chain, ``END``) and numbers atom serials so that each ``TER`` takes its own serial,
as the PDB format asks. mmCIF files describe their polymers (entities, full sequences, chains) as PDBx/mmCIF asks, and
those of predictions are ModelCIF files with the QA scores (``io.modelcif``).

Reading: PDB (``.pdb``/``.ent``), mmCIF (``.cif``/``.mmcif``/``.pdbx``) or BinaryCIF (``.bcif``), each optionally
gzip-compressed (``.gz``); the first model and the first alternate location are kept.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

import biotite.structure as struc
import numpy as np
import torch
from biotite import DeserializationError, InvalidFileError
from biotite.structure.io import pdb, pdbx

from esmfold_lite.geometry.residue_constants import atom_types, resnames
from esmfold_lite.io.modelcif import (
    RANDOM_WEIGHTS_REMARK,
    ModelScores,
    add_modelcif_categories,
    mark_random_weights,
    ordered,
)
from esmfold_lite.io.pdbx_polymer import PolymerChain, add_polymer_categories, chains_from_atoms, label_ids

CHAIN_IDS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        return x.numpy()
    return np.asarray(x)


def to_atom_array(positions, atom_mask, aatype, residue_index, chain_index=None, b_factors=None) -> struc.AtomArray:
    """One structure in atom37 layout → ``AtomArray`` holding the atoms whose mask is set.

    Args:
        positions: (L, 37, 3) Å, atom37 order.
        atom_mask: (L, 37), atoms with mask > 0.5 are kept; residues without atoms are left out.
        aatype: (L,) AF2 restype order (``restypes``), 20 = unknown ("UNK").
        residue_index: (L,) residue numbers written as-is (``res_id``).
        chain_index: (L,) chain number ≥ 0 → chain id "A", "B", ...; None = all chain "A".
        b_factors: (L, 37) per atom or (L,) per residue (e.g. pLDDT); None = 0.
    Returns:
        AtomArray with annotations ``b_factor`` and ``occupancy`` (1.0).
    Accepts numpy arrays or torch tensors (any device).
    """
    positions = _numpy(positions).astype(np.float32)
    atom_mask = _numpy(atom_mask) > 0.5
    aatype = _numpy(aatype).astype(np.int64)
    n_res = aatype.shape[0]
    residue_index = _numpy(residue_index).astype(np.int64)
    chain_index = np.zeros(n_res, np.int64) if chain_index is None else _numpy(chain_index).astype(np.int64)
    b_factors = np.zeros(n_res, np.float32) if b_factors is None else _numpy(b_factors).astype(np.float32)
    if b_factors.shape == (n_res,):
        b_factors = np.broadcast_to(b_factors[:, None], (n_res, len(atom_types)))
    shapes = (positions.shape, atom_mask.shape, b_factors.shape, residue_index.shape, chain_index.shape)
    if shapes != ((n_res, len(atom_types), 3), (n_res, len(atom_types)), (n_res, len(atom_types)), (n_res,), (n_res,)):
        raise ValueError(
            f"expected (L, 37, 3), (L, 37), (L, 37) or (L,), (L,), (L,) arrays for L = {n_res}, got {shapes}"
        )
    if aatype.min(initial=0) < 0 or aatype.max(initial=0) >= len(resnames):
        raise ValueError(f"aatype must be in [0, {len(resnames) - 1}] (AF2 order, {len(resnames) - 1} = X)")
    if chain_index.min(initial=0) < 0 or chain_index.max(initial=0) >= len(CHAIN_IDS):
        raise ValueError(f"chain_index must be in [0, {len(CHAIN_IDS) - 1}]; padding must be cut before writing")

    res, atom = np.nonzero(atom_mask)  # row-major: residue by residue, atom37 order inside
    atom_names = np.asarray(atom_types)[atom]
    atoms = struc.AtomArray(len(res))
    atoms.coord = positions[res, atom]
    atoms.chain_id = np.asarray(list(CHAIN_IDS))[chain_index[res]]
    atoms.res_id = residue_index[res]
    atoms.res_name = np.asarray(resnames)[aatype[res]]
    atoms.atom_name = atom_names
    atoms.element = np.asarray([name[0] for name in atom_names], dtype="U2")  # atom37 names start with N, C, O or S
    atoms.hetero = np.zeros(len(res), bool)
    atoms.set_annotation("b_factor", b_factors[res, atom].astype(float))
    atoms.set_annotation("occupancy", np.ones(len(res), float))
    return atoms


def _check_not_empty(atoms: struc.AtomArray) -> None:
    if atoms.array_length() == 0:
        raise ValueError("the structure has no atoms to write (unknown residues 'X' have none)")


def _chain_ends(atoms: struc.AtomArray) -> np.ndarray:
    """Indices of the last atom of each chain (a chain ends where the chain id changes)."""
    change = atoms.chain_id[1:] != atoms.chain_id[:-1]
    return np.append(np.nonzero(change)[0], atoms.array_length() - 1)


def to_pdb_string(atoms: struc.AtomArray, random_weights: bool = False) -> str:
    """PDB text: ATOM records (biotite), a TER record after each chain, END; first, with ``random_weights`` (a model
    from ``esmfold-lite weights make-random``), ``REMARK 250`` saying so (`RANDOM_WEIGHTS_REMARK`)."""
    _check_not_empty(atoms)
    ends = _chain_ends(atoms)
    atoms = atoms.copy()
    chain_number = np.zeros(atoms.array_length(), np.int64)
    chain_number[ends[:-1] + 1] = 1
    atoms.set_annotation("atom_id", np.arange(1, atoms.array_length() + 1) + np.cumsum(chain_number))
    file = pdb.PDBFile()
    file.set_structure(atoms)
    lines = list(file.lines)
    for end in ends[::-1]:  # insert from the back so earlier indices stay valid
        ter = (
            f"TER   {atoms.atom_id[end] + 1:>5}      {atoms.res_name[end]:>3} {atoms.chain_id[end]}"
            f"{atoms.res_id[end]:>4}{atoms.ins_code[end]:1}"
        )
        lines.insert(end + 1, ter)
    if random_weights:
        lines.insert(0, f"REMARK 250 {RANDOM_WEIGHTS_REMARK}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def to_mmcif_string(
    atoms: struc.AtomArray,
    name: str = "esmfold_lite",
    scores: ModelScores | None = None,
    chains: Sequence[PolymerChain] | None = None,
    random_weights: bool = False,
) -> str:
    """mmCIF text with one data block ``name`` holding the ``atom_site`` category (B_iso_or_equiv, occupancy) and
    the PDBx polymer description it refers to: entities, their full sequences and chains (``io.modelcif``).

    ``chains``: the full sequence of each chain (residues without atoms included, e.g. unknown residues "X", which
    ESMFold places none for), in order; None = the residues ``atoms`` has. Numbers are written with the precision of
    PDB files: coordinates 3 decimals, B-factor and occupancy 2. With ``scores`` (a prediction, whose B-factors are
    pLDDT on 0–100) the block also holds the ModelCIF categories: the modeling protocol and the QA scores (pLDDT per
    residue, mean pLDDT and pTM). With ``random_weights`` (a model from ``esmfold-lite weights make-random``) the title
    and a ``_pdbx_database_remark`` say so (``io.modelcif.mark_random_weights``). Raises ValueError if an atom's
    residue is not in ``chains``.
    """
    _check_not_empty(atoms)
    block_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "structure"  # data block names allow no spaces
    chains = chains_from_atoms(atoms) if chains is None else list(chains)
    entity_ids, seq_ids = label_ids(atoms, chains)
    atoms = atoms.copy()
    atoms.set_annotation("label_entity_id", entity_ids)
    block = pdbx.CIFBlock()
    pdbx.set_structure(block, atoms)
    atom_site = block["atom_site"]
    atom_site["label_seq_id"] = seq_ids  # the position in the chain's sequence; auth_seq_id keeps the residue number
    for key, values, decimals in [
        ("Cartn_x", atoms.coord[:, 0], 3),
        ("Cartn_y", atoms.coord[:, 1], 3),
        ("Cartn_z", atoms.coord[:, 2], 3),
        ("B_iso_or_equiv", atoms.b_factor, 2),
        ("occupancy", atoms.occupancy, 2),
    ]:
        atom_site[key] = np.char.mod(f"%.{decimals}f", values)
    add_polymer_categories(block, block_name, chains)
    if scores is not None:
        add_modelcif_categories(block, block_name, chains, scores)
    if random_weights:
        mark_random_weights(block, block_name)
    file = pdbx.CIFFile()
    file[block_name] = ordered(block)
    out = io.StringIO()
    file.write(out)
    return out.getvalue()


STRUCTURE_SUFFIXES: dict[str, str] = {
    ".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif", ".pdbx": "cif", ".bcif": "bcif",
}  # fmt: skip


def read_structure_bytes(path: str | os.PathLike) -> tuple[bytes, str]:
    """The (decompressed) content of a structure file and its format, "pdb", "cif" or "bcif", from the file name.

    Raises FileNotFoundError if there is no such file, ValueError for an unknown suffix.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = suffixes[-2 if compressed else -1] if len(suffixes) > int(compressed) else ""
    if suffix not in STRUCTURE_SUFFIXES:
        raise ValueError(f"{path}: unknown structure format; use .pdb, .ent, .cif, .mmcif, .pdbx or .bcif (+ .gz)")
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    data = path.read_bytes()
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: cannot decompress ({exc})") from None
    return data, STRUCTURE_SUFFIXES[suffix]


def parse_structure(
    data: bytes, fmt: str, source: str = "structure", extra_fields: tuple[str, ...] = ()
) -> struc.AtomArray:
    """The first model of PDB / mmCIF / BinaryCIF content (``fmt`` "pdb", "cif", "bcif") as an ``AtomArray``.

    ``extra_fields``: annotations to read as well, e.g. ("b_factor",). Raises ValueError naming ``source`` when the
    content cannot be read or holds no atoms.
    """
    try:
        if fmt == "bcif":
            file = pdbx.BinaryCIFFile.read(io.BytesIO(data))
        else:
            text = io.StringIO(data.decode())
            file = pdb.PDBFile.read(text) if fmt == "pdb" else pdbx.CIFFile.read(text)
        if fmt == "pdb":
            if file.get_model_count() == 0:
                raise ValueError(f"{source}: no atoms found; is it a PDB file?")
            atoms = file.get_structure(model=1, altloc="first", extra_fields=list(extra_fields))
        else:
            atoms = pdbx.get_structure(file, model=1, altloc="first", extra_fields=list(extra_fields))
    except (
        InvalidFileError, DeserializationError, ValueError, KeyError, IndexError, OSError, EOFError, UnicodeDecodeError
    ) as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        detail = f"it has no {exc}" if isinstance(exc, KeyError) else str(exc).strip() or "it is cut short or damaged"
        raise ValueError(f"{source}: cannot read it as a {fmt.upper()} structure ({detail})") from None
    if atoms.array_length() == 0:
        raise ValueError(f"{source}: no atoms found; is it a {fmt.upper()} file?")
    return atoms


def load_structure(path: str | os.PathLike, extra_fields: tuple[str, ...] = ()) -> struc.AtomArray:
    """The first model of a structure file (see ``read_structure_bytes`` and ``parse_structure``)."""
    data, fmt = read_structure_bytes(path)
    return parse_structure(data, fmt, str(path), extra_fields)
