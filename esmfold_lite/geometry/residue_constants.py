"""Amino-acid geometry constants of AlphaFold 2 (supplement section 1.8), as ESMFold uses them.

Only three kinds of facts are written down by hand below: the names (residue types, the 37 atom types, each
residue's compact 14-atom layout), the chi-angle atom quadruples, and the literature atom positions of every
residue relative to its rigid groups. Everything else (masks, index maps, default frames between rigid groups) is
derived from those at import time.

Residue index order is AlphaFold's (``restypes`` = "ARNDCQEGHILKMFPSTWYV", one-letter codes sorted by their
three-letter names); index 20 is the unknown residue X, whose rows of every per-residue table are zeros.

Rigid groups (supplement Table 2): 0 backbone, 1 pre-omega, 2 phi, 3 psi, 4..7 chi1..chi4. A group's atoms are
given in that group's frame, whose x axis is the rotation axis of its torsion and whose xy plane holds the atom
that defines the torsion.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------

restypes: list[str] = list("ARNDCQEGHILKMFPSTWYV")
restype_order: dict[str, int] = {r: i for i, r in enumerate(restypes)}
restype_num = len(restypes)  # 20
unk_restype_index = restype_num  # 20 = X
restypes_with_x: list[str] = restypes + ["X"]
restype_order_with_x: dict[str, int] = {r: i for i, r in enumerate(restypes_with_x)}

_THREE_LETTER = "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split()
restype_1to3: dict[str, str] = dict(zip(restypes, _THREE_LETTER, strict=True))
restype_3to1: dict[str, str] = {three: one for one, three in restype_1to3.items()}
unk_restype = "UNK"
resnames: list[str] = _THREE_LETTER + [unk_restype]
resname_to_idx: dict[str, int] = {name: i for i, name in enumerate(resnames)}

atom_types: list[str] = (
    "N CA C CB O CG CG1 CG2 OG OG1 SG CD CD1 CD2 ND1 ND2 OD1 OD2 SD CE CE1 CE2 CE3 NE NE1 NE2 OE1 OE2 CH2 NH1 NH2 "
    "OH CZ CZ2 CZ3 NZ OXT"
).split()
atom_order: dict[str, int] = {name: i for i, name in enumerate(atom_types)}
atom_type_num = len(atom_types)  # 37

_ATOM14 = {
    "ALA": "N CA C O CB",
    "ARG": "N CA C O CB CG CD NE CZ NH1 NH2",
    "ASN": "N CA C O CB CG OD1 ND2",
    "ASP": "N CA C O CB CG OD1 OD2",
    "CYS": "N CA C O CB SG",
    "GLN": "N CA C O CB CG CD OE1 NE2",
    "GLU": "N CA C O CB CG CD OE1 OE2",
    "GLY": "N CA C O",
    "HIS": "N CA C O CB CG ND1 CD2 CE1 NE2",
    "ILE": "N CA C O CB CG1 CG2 CD1",
    "LEU": "N CA C O CB CG CD1 CD2",
    "LYS": "N CA C O CB CG CD CE NZ",
    "MET": "N CA C O CB CG SD CE",
    "PHE": "N CA C O CB CG CD1 CD2 CE1 CE2 CZ",
    "PRO": "N CA C O CB CG CD",
    "SER": "N CA C O CB OG",
    "THR": "N CA C O CB OG1 CG2",
    "TRP": "N CA C O CB CG CD1 CD2 NE1 CE2 CE3 CZ2 CZ3 CH2",
    "TYR": "N CA C O CB CG CD1 CD2 CE1 CE2 CZ OH",
    "VAL": "N CA C O CB CG1 CG2",
    "UNK": "",
}
# Compact layout: each residue's heavy atoms in 14 slots, "" for empty slots.
restype_name_to_atom14_names: dict[str, list[str]] = {
    name: atoms.split() + [""] * (14 - len(atoms.split())) for name, atoms in _ATOM14.items()
}
# Heavy atoms of each residue type (no OXT).
residue_atoms: dict[str, list[str]] = {name: atoms.split() for name, atoms in _ATOM14.items() if name != unk_restype}

# ---------------------------------------------------------------------------------------------------------------
# Chi angles
# ---------------------------------------------------------------------------------------------------------------

# The four atoms defining chi1, chi2, ... of each residue (ARG's chi5 is fixed near 0 and left out).
_CHI_ATOMS = {
    "ALA": "",
    "ARG": "N CA CB CG, CA CB CG CD, CB CG CD NE, CG CD NE CZ",
    "ASN": "N CA CB CG, CA CB CG OD1",
    "ASP": "N CA CB CG, CA CB CG OD1",
    "CYS": "N CA CB SG",
    "GLN": "N CA CB CG, CA CB CG CD, CB CG CD OE1",
    "GLU": "N CA CB CG, CA CB CG CD, CB CG CD OE1",
    "GLY": "",
    "HIS": "N CA CB CG, CA CB CG ND1",
    "ILE": "N CA CB CG1, CA CB CG1 CD1",
    "LEU": "N CA CB CG, CA CB CG CD1",
    "LYS": "N CA CB CG, CA CB CG CD, CB CG CD CE, CG CD CE NZ",
    "MET": "N CA CB CG, CA CB CG SD, CB CG SD CE",
    "PHE": "N CA CB CG, CA CB CG CD1",
    "PRO": "N CA CB CG, CA CB CG CD",
    "SER": "N CA CB OG",
    "THR": "N CA CB OG1",
    "TRP": "N CA CB CG, CA CB CG CD1",
    "TYR": "N CA CB CG, CA CB CG CD1",
    "VAL": "N CA CB CG1",
}
chi_angles_atoms: dict[str, list[list[str]]] = {
    name: [quad.split() for quad in spec.split(",")] if spec else [] for name, spec in _CHI_ATOMS.items()
}
# (20, 4): 1.0 where the residue has that chi angle.
chi_angles_mask: list[list[float]] = [
    [1.0 if k < len(chi_angles_atoms[restype_1to3[r]]) else 0.0 for k in range(4)] for r in restypes
]
# Chi angles that a rotation by pi maps onto an equivalent structure (symmetric side-chain ends), 1-based.
_PI_PERIODIC_CHI = {"ASP": 2, "GLU": 3, "PHE": 2, "TYR": 2}
# (21, 4), the last row for X.
chi_pi_periodic: list[list[float]] = [
    [1.0 if _PI_PERIODIC_CHI.get(name) == k + 1 else 0.0 for k in range(4)] for name in resnames
]
# (20, 4, 4) atom37 indices of the chi atoms, zeros for absent chi angles.
chi_angles_atom_indices = np.array(
    [
        [[atom_order[a] for a in quad] for quad in chi_angles_atoms[restype_1to3[r]]]
        + [[0, 0, 0, 0]] * (4 - len(chi_angles_atoms[restype_1to3[r]]))
        for r in restypes
    ]
)

# ---------------------------------------------------------------------------------------------------------------
# Literature atom positions per rigid group (Å): "atom group x y z"
# ---------------------------------------------------------------------------------------------------------------

_LITERATURE_POSITIONS = """
ALA N 0 -0.525 1.363 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 -0.000 -0.000 | CB 0 -0.529 -0.774 -1.205
    | O 3 0.627 1.062 0.000
ARG N 0 -0.524 1.362 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 -0.000 -0.000 | CB 0 -0.524 -0.778 -1.209
    | O 3 0.626 1.062 0.000 | CG 4 0.616 1.390 -0.000 | CD 5 0.564 1.414 0.000 | NE 6 0.539 1.357 -0.000
    | NH1 7 0.206 2.301 0.000 | NH2 7 2.078 0.978 -0.000 | CZ 7 0.758 1.093 -0.000
ASN N 0 -0.536 1.357 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 -0.000 -0.000 | CB 0 -0.531 -0.787 -1.200
    | O 3 0.625 1.062 0.000 | CG 4 0.584 1.399 0.000 | ND2 5 0.593 -1.188 0.001 | OD1 5 0.633 1.059 0.000
ASP N 0 -0.525 1.362 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.527 0.000 -0.000 | CB 0 -0.526 -0.778 -1.208
    | O 3 0.626 1.062 -0.000 | CG 4 0.593 1.398 -0.000 | OD1 5 0.610 1.091 0.000 | OD2 5 0.592 -1.101 -0.003
CYS N 0 -0.522 1.362 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.524 0.000 0.000 | CB 0 -0.519 -0.773 -1.212
    | O 3 0.625 1.062 -0.000 | SG 4 0.728 1.653 0.000
GLN N 0 -0.526 1.361 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 0.000 0.000 | CB 0 -0.525 -0.779 -1.207
    | O 3 0.626 1.062 -0.000 | CG 4 0.615 1.393 0.000 | CD 5 0.587 1.399 -0.000 | NE2 6 0.593 -1.189 -0.001
    | OE1 6 0.634 1.060 0.000
GLU N 0 -0.528 1.361 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 -0.000 -0.000 | CB 0 -0.526 -0.781 -1.207
    | O 3 0.626 1.062 0.000 | CG 4 0.615 1.392 0.000 | CD 5 0.600 1.397 0.000 | OE1 6 0.607 1.095 -0.000
    | OE2 6 0.589 -1.104 -0.001
GLY N 0 -0.572 1.337 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.517 -0.000 -0.000 | O 3 0.626 1.062 -0.000
HIS N 0 -0.527 1.360 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 0.000 0.000 | CB 0 -0.525 -0.778 -1.208
    | O 3 0.625 1.063 0.000 | CG 4 0.600 1.370 -0.000 | CD2 5 0.889 -1.021 0.003 | ND1 5 0.744 1.160 -0.000
    | CE1 5 2.030 0.851 0.002 | NE2 5 2.145 -0.466 0.004
ILE N 0 -0.493 1.373 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.527 -0.000 -0.000 | CB 0 -0.536 -0.793 -1.213
    | O 3 0.627 1.062 -0.000 | CG1 4 0.534 1.437 -0.000 | CG2 4 0.540 -0.785 -1.199 | CD1 5 0.619 1.391 0.000
LEU N 0 -0.520 1.363 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 -0.000 -0.000 | CB 0 -0.522 -0.773 -1.214
    | O 3 0.625 1.063 -0.000 | CG 4 0.678 1.371 0.000 | CD1 5 0.530 1.430 -0.000 | CD2 5 0.535 -0.774 1.200
LYS N 0 -0.526 1.362 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 0.000 0.000 | CB 0 -0.524 -0.778 -1.208
    | O 3 0.626 1.062 -0.000 | CG 4 0.619 1.390 0.000 | CD 5 0.559 1.417 0.000 | CE 6 0.560 1.416 0.000
    | NZ 7 0.554 1.387 0.000
MET N 0 -0.521 1.364 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 0.000 0.000 | CB 0 -0.523 -0.776 -1.210
    | O 3 0.625 1.062 -0.000 | CG 4 0.613 1.391 -0.000 | SD 5 0.703 1.695 0.000 | CE 6 0.320 1.786 -0.000
PHE N 0 -0.518 1.363 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.524 0.000 -0.000 | CB 0 -0.525 -0.776 -1.212
    | O 3 0.626 1.062 -0.000 | CG 4 0.607 1.377 0.000 | CD1 5 0.709 1.195 -0.000 | CD2 5 0.706 -1.196 0.000
    | CE1 5 2.102 1.198 -0.000 | CE2 5 2.098 -1.201 -0.000 | CZ 5 2.794 -0.003 -0.001
PRO N 0 -0.566 1.351 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.527 -0.000 0.000 | CB 0 -0.546 -0.611 -1.293
    | O 3 0.621 1.066 0.000 | CG 4 0.382 1.445 0.0 | CD 5 0.477 1.424 0.0
SER N 0 -0.529 1.360 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 -0.000 -0.000 | CB 0 -0.518 -0.777 -1.211
    | O 3 0.626 1.062 -0.000 | OG 4 0.503 1.325 0.000
THR N 0 -0.517 1.364 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.526 0.000 -0.000 | CB 0 -0.516 -0.793 -1.215
    | O 3 0.626 1.062 0.000 | CG2 4 0.550 -0.718 -1.228 | OG1 4 0.472 1.353 0.000
TRP N 0 -0.521 1.363 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.525 -0.000 0.000 | CB 0 -0.523 -0.776 -1.212
    | O 3 0.627 1.062 0.000 | CG 4 0.609 1.370 -0.000 | CD1 5 0.824 1.091 0.000 | CD2 5 0.854 -1.148 -0.005
    | CE2 5 2.186 -0.678 -0.007 | CE3 5 0.622 -2.530 -0.007 | NE1 5 2.140 0.690 -0.004 | CH2 5 3.028 -2.890 -0.013
    | CZ2 5 3.283 -1.543 -0.011 | CZ3 5 1.715 -3.389 -0.011
TYR N 0 -0.522 1.362 0.000 | CA 0 0.000 0.000 0.000 | C 0 1.524 -0.000 -0.000 | CB 0 -0.522 -0.776 -1.213
    | O 3 0.627 1.062 -0.000 | CG 4 0.607 1.382 -0.000 | CD1 5 0.716 1.195 -0.000 | CD2 5 0.713 -1.194 -0.001
    | CE1 5 2.107 1.200 -0.002 | CE2 5 2.104 -1.201 -0.003 | OH 5 4.168 -0.002 -0.005 | CZ 5 2.791 -0.001 -0.003
VAL N 0 -0.494 1.373 -0.000 | CA 0 0.000 0.000 0.000 | C 0 1.527 -0.000 -0.000 | CB 0 -0.533 -0.795 -1.213
    | O 3 0.627 1.062 -0.000 | CG1 4 0.540 1.429 -0.000 | CG2 4 0.533 -0.776 1.203
"""
# (PRO's CD is the literature position with the CB-CG-CD angle opened by 2 degrees, as in AlphaFold.)


def _parse_literature_positions(text: str) -> dict[str, list[tuple[str, int, tuple[float, float, float]]]]:
    """``_LITERATURE_POSITIONS`` → {resname: [(atom, group, (x, y, z)), ...]} (continuation lines start with '|')."""
    records: dict[str, str] = {}
    name = None
    for line in text.strip().splitlines():
        line = line.strip()
        if line.startswith("|"):
            records[name] += " " + line
        else:
            name, rest = line.split(maxsplit=1)
            records[name] = rest
    table = {}
    for name, rest in records.items():
        entries = []
        for item in rest.split("|"):
            atom, group, x, y, z = item.split()
            entries.append((atom, int(group), (float(x), float(y), float(z))))
        table[name] = entries
    return table


rigid_group_atom_positions = _parse_literature_positions(_LITERATURE_POSITIONS)

# ---------------------------------------------------------------------------------------------------------------
# Derived per-restype tables; row 20 (X) stays zero
# ---------------------------------------------------------------------------------------------------------------


def _atom_layout_tables() -> dict[str, np.ndarray]:
    """Masks and index maps between the atom14 and atom37 layouts, plus per-atom rigid group and position."""
    t = {
        "atom14_to_atom37": np.zeros([21, 14], dtype=np.int64),
        "atom37_to_atom14": np.zeros([21, 37], dtype=np.int64),
        "atom14_mask": np.zeros([21, 14], dtype=np.float32),
        "atom37_mask": np.zeros([21, 37], dtype=np.float32),
        "atom14_to_rigid_group": np.zeros([21, 14], dtype=np.int64),
        "atom37_to_rigid_group": np.zeros([21, 37], dtype=np.int64),
        "atom14_rigid_group_positions": np.zeros([21, 14, 3], dtype=np.float32),
        "atom37_rigid_group_positions": np.zeros([21, 37, 3], dtype=np.float32),
    }
    for i, resname in enumerate(_THREE_LETTER):
        slots = restype_name_to_atom14_names[resname]
        for j, atom in enumerate(slots):
            if atom:
                t["atom14_to_atom37"][i, j] = atom_order[atom]
                t["atom37_to_atom14"][i, atom_order[atom]] = j
        for atom, group, position in rigid_group_atom_positions[resname]:
            j, k = slots.index(atom), atom_order[atom]
            t["atom14_mask"][i, j] = t["atom37_mask"][i, k] = 1.0
            t["atom14_to_rigid_group"][i, j] = t["atom37_to_rigid_group"][i, k] = group
            t["atom14_rigid_group_positions"][i, j] = t["atom37_rigid_group_positions"][i, k] = position
    return t


_LAYOUT = _atom_layout_tables()
restype_atom14_to_atom37: np.ndarray = _LAYOUT["atom14_to_atom37"]  # (21, 14) atom37 index of each atom14 slot
restype_atom37_to_atom14: np.ndarray = _LAYOUT["atom37_to_atom14"]  # (21, 37) atom14 slot of each atom37 atom
restype_atom14_mask: np.ndarray = _LAYOUT["atom14_mask"]  # (21, 14)
restype_atom37_mask: np.ndarray = _LAYOUT["atom37_mask"]  # (21, 37)
restype_atom14_to_rigid_group: np.ndarray = _LAYOUT["atom14_to_rigid_group"]  # (21, 14) group 0..7
restype_atom37_to_rigid_group: np.ndarray = _LAYOUT["atom37_to_rigid_group"]  # (21, 37)
restype_atom14_rigid_group_positions: np.ndarray = _LAYOUT["atom14_rigid_group_positions"]  # (21, 14, 3) Å
restype_atom37_rigid_group_positions: np.ndarray = _LAYOUT["atom37_rigid_group_positions"]  # (21, 37, 3) Å


def _frame_4x4(x_direction: np.ndarray, xy_direction: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Homogeneous 4x4 frame: x axis along ``x_direction``, y axis in the plane of it and ``xy_direction``."""
    ex = x_direction / np.linalg.norm(x_direction)
    ey = xy_direction - np.dot(xy_direction, ex) * ex
    ey = ey / np.linalg.norm(ey)
    frame = np.eye(4)
    frame[:3, 0], frame[:3, 1], frame[:3, 2], frame[:3, 3] = ex, ey, np.cross(ex, ey), origin
    return frame


def _default_frames() -> np.ndarray:
    """(21, 8, 4, 4): each rigid group's frame in its parent's frame at zero torsion.

    Parents: backbone for groups 0..4 (0 and 1 are the identity), the previous chi group for chi2..chi4.
    """
    frames = np.zeros([21, 8, 4, 4], dtype=np.float32)
    for i, resname in enumerate(_THREE_LETTER):
        pos = {atom: np.array(p) for atom, _, p in rigid_group_atom_positions[resname]}
        frames[i, 0] = frames[i, 1] = np.eye(4)
        frames[i, 2] = _frame_4x4(pos["N"] - pos["CA"], np.array([1.0, 0.0, 0.0]), pos["N"])  # phi
        frames[i, 3] = _frame_4x4(pos["C"] - pos["CA"], pos["CA"] - pos["N"], pos["C"])  # psi
        for k, (a, b, c, _) in enumerate(chi_angles_atoms[resname]):
            if k == 0:  # chi1 frame in backbone coordinates, axis CA -> CB
                frames[i, 4] = _frame_4x4(pos[c] - pos[b], pos[a] - pos[b], pos[c])
            else:  # chi(k+1) in chi(k) coordinates: the axis runs from the parent origin to the axis-end atom
                frames[i, 4 + k] = _frame_4x4(pos[c], np.array([-1.0, 0.0, 0.0]), pos[c])
    return frames


restype_rigid_group_default_frame: np.ndarray = _default_frames()
