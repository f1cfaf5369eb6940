"""ESMFold2's featurisation of protein chains: one-letter sequences -> the keyword tensors `ESMFold2.forward` takes
(transformers' ``protein_utils.prepare_protein_features`` names, dtypes and layout, extended to several chains).

Layout: one token per residue; each residue's heavy atoms in its atom14 order (X: the four backbone atoms at the
origin), every chain's atoms one after another, then zero padding up to a multiple of 32 atoms. Chains are told
apart as ESMFold2 was trained (no linker): ``asym_id`` is the chain's index, ``entity_id`` numbers the distinct
sequences from 1 (identical chains share one), ``sym_id`` counts the copies of an entity (0, 1, ...), and
``residue_index`` restarts at 0 in every chain while ``token_index`` runs on. The MSA is the single row of the
sequence itself (no deletions); no token bonds.

Shapes (batch of one): N tokens, A atoms (padded).
    token_index, residue_index, asym_id, sym_id, entity_id, mol_type, res_type, input_ids, distogram_atom_idx,
    deletion_mean: [1, N]; attention_mask: [1, N] bool; token_bonds: [1, N, N, 1] fp32; msa: [1, 1, N];
    msa_attention_mask: [1, 1, N] bool; ref_pos: [1, A, 3] fp32; ref_element, ref_space_uid, atom_to_token: [1, A];
    ref_charge: [1, A] int8; ref_atom_name_chars: [1, A, 4]; atom_attention_mask: [1, A] bool.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from esmfold_lite.alphabet import ESMC_TOKENS
from esmfold_lite.esmfold2.residue_tables import CHARGED_ATOMS, REF_POS
from esmfold_lite.geometry import residue_constants as rc

ATOM_BLOCK = 32
"""The atom count is padded to a multiple of this (the atom transformer's query window)."""

MOL_TYPE_PROTEIN = 0
_RES_TYPE_OFFSET = 2  # ESMFold2's residue types: 0 and 1 are special, ALA..VAL (three-letter order) 2..21, UNK 22
_ATOMIC_NUMBER = {"C": 6, "N": 7, "O": 8, "S": 16}
_UNKNOWN_ATOMS = ("N", "CA", "C", "O")
_ESMC_ID = {letter: ESMC_TOKENS.index(letter) for letter in rc.restypes}
_ESMC_UNKNOWN = ESMC_TOKENS.index("<unk>")  # ESMFold2 gives X ESM C's <unk>, not its X token


def _atom_name_chars(name: str) -> list[int]:
    """An atom name as four character codes (ASCII minus 32, blank padding 0)."""
    return [ord(c) - 32 if c != " " else 0 for c in name.ljust(4)[:4]]


def _check(chains: Sequence[str]) -> None:
    if not chains:
        raise ValueError("chains must be a non-empty list of sequences")
    for number, chain in enumerate(chains, start=1):
        if not chain:
            raise ValueError(f"chain {number} is empty")
        for position, letter in enumerate(chain, start=1):
            if letter not in rc.restype_order_with_x:
                raise ValueError(
                    f"chain {number}, position {position}: {letter!r} is not one of the 20 amino acids or X "
                    "(ESMFold2 folds protein chains only)"
                )


def protein_features(chains: str | Sequence[str]) -> dict[str, Tensor]:
    """Features of one protein (a sequence) or a complex (its chains, in order), for `ESMFold2.forward`.

    Raises ValueError naming the chain (1-based), position (1-based) and letter of anything but the 20 amino acids
    and X (upper case), and for an empty chain.
    """
    chains = [chains] if isinstance(chains, str) else list(chains)
    _check(chains)
    entities: dict[str, int] = {}
    tokens: dict[str, list[int]] = {k: [] for k in ("asym_id", "sym_id", "entity_id", "residue_index")}
    tokens |= {k: [] for k in ("res_type", "input_ids", "distogram_atom_idx")}
    atoms: dict[str, list] = {k: [] for k in ("ref_pos", "ref_element", "ref_charge", "ref_atom_name_chars")}
    atoms["atom_to_token"] = []
    copies: dict[int, int] = {}
    for asym_id, chain in enumerate(chains):
        entity_id = entities.setdefault(chain, len(entities) + 1)
        sym_id = copies.get(entity_id, 0)
        copies[entity_id] = sym_id + 1
        for residue_index, letter in enumerate(chain):
            token = len(tokens["res_type"])
            known = letter != "X"
            name = rc.restype_1to3[letter] if known else rc.unk_restype
            atom_names = [n for n in rc.restype_name_to_atom14_names[name] if n] if known else list(_UNKNOWN_ATOMS)
            first_atom = len(atoms["atom_to_token"])
            tokens["asym_id"].append(asym_id)
            tokens["sym_id"].append(sym_id)
            tokens["entity_id"].append(entity_id)
            tokens["residue_index"].append(residue_index)
            tokens["res_type"].append(rc.resname_to_idx[name] + _RES_TYPE_OFFSET)
            tokens["input_ids"].append(_ESMC_ID[letter] if known else _ESMC_UNKNOWN)
            tokens["distogram_atom_idx"].append(first_atom + atom_names.index("CB" if "CB" in atom_names else "CA"))
            atoms["ref_pos"] += REF_POS[name] if known else [(0.0, 0.0, 0.0)] * len(atom_names)
            atoms["ref_element"] += [_ATOMIC_NUMBER[n[0]] for n in atom_names]
            atoms["ref_charge"] += [CHARGED_ATOMS.get((name, n), 0) for n in atom_names]
            atoms["ref_atom_name_chars"] += [_atom_name_chars(n) for n in atom_names]
            atoms["atom_to_token"] += [token] * len(atom_names)
    num_tokens, num_atoms = len(tokens["res_type"]), len(atoms["atom_to_token"])
    pad = -num_atoms % ATOM_BLOCK
    dtypes = {"ref_pos": torch.float32, "ref_charge": torch.int8}
    atom_tensors = {key: torch.tensor(values, dtype=dtypes.get(key, torch.int64)) for key, values in atoms.items()}
    atom_tensors["atom_attention_mask"] = torch.ones(num_atoms, dtype=torch.bool)
    atom_tensors["ref_space_uid"] = atom_tensors["atom_to_token"].clone()  # one conformer per residue
    atom_tensors = {k: torch.cat([v, v.new_zeros(pad, *v.shape[1:])]) for k, v in atom_tensors.items()}
    res_type = torch.tensor(tokens["res_type"])
    features = {
        "token_index": torch.arange(num_tokens),
        **{key: torch.tensor(values) for key, values in tokens.items()},
        "mol_type": torch.full((num_tokens,), MOL_TYPE_PROTEIN),
        "token_bonds": torch.zeros(num_tokens, num_tokens, 1),
        "attention_mask": torch.ones(num_tokens, dtype=torch.bool),
        "msa": res_type[None],
        "msa_attention_mask": torch.ones(1, num_tokens, dtype=torch.bool),
        "deletion_mean": torch.zeros(num_tokens),
        **atom_tensors,
    }
    return {key: value[None] for key, value in features.items()}
