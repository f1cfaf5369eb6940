"""Sequences (``"SEQA:SEQB"`` for complexes) → padded ESMFold inputs, the way the original joins chains.

Sequence rule (the one place it is written; the FASTA validator and ``ESMFold.fold`` both use it):
`normalize_sequence` accepts upper or lower case, whitespace anywhere and one trailing ``*`` (stop codon) per chain;
`sequence_problem` then allows exactly the residue letters of the ESM vocabulary, the 20 standard amino acids plus
``X B Z U O`` (folded as unknown, ``X``, as the original does), in one or more non-empty chains separated by ``:``.
Everything else (digits, gaps ``-``/``.``, ``J``, punctuation, an inner ``*``, non-ASCII letters) is refused.

Chains are joined by a poly-G linker (25 residues) and each chain's residue index is shifted by
``residue_index_offset`` (512) times its chain number, so the trunk's relative-position embedding sees the chains as
far apart. The linker is marked in ``linker_mask`` so it can be cut from every output.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from esmfold_lite.geometry.residue_constants import restype_order_with_x

CHAIN_SEPARATOR = ":"
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
UNKNOWN_AMINO_ACIDS = "XBZUO"  # in the ESM vocabulary; ESMFold treats them as X
AMINO_ACID_LETTERS = frozenset(STANDARD_AMINO_ACIDS + UNKNOWN_AMINO_ACIDS)
DEFAULT_LINKER = "G" * 25
DEFAULT_RESIDUE_INDEX_OFFSET = 512


_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)  # ASCII only: keeps positions stable
_MAX_SHOWN = 5  # offending characters listed in a problem description


def normalize_sequence(text: str) -> str:
    """``text`` with whitespace removed, ASCII letters upper-cased and one trailing ``*`` per chain dropped."""
    chains = "".join(text.split()).translate(_UPPER).split(CHAIN_SEPARATOR)
    return CHAIN_SEPARATOR.join(chain[:-1] if chain.endswith("*") else chain for chain in chains)


def sequence_problem(sequence: str) -> str | None:
    """Why a `normalize_sequence` result cannot be folded (one line of ASCII, no tabs), or None when it can.

    Checks in order: empty sequence, empty chain, characters that are not residue letters (the first few with their
    1-based positions, counted per chain and written ``chain:position`` for complexes).
    """
    if not sequence:
        return "empty sequence"
    chains = sequence.split(CHAIN_SEPARATOR)
    empty = [str(i + 1) for i, chain in enumerate(chains) if not chain]
    if empty:
        return f"empty chain {', '.join(empty)} of {len(chains)} (':' separates chains)"
    bad = [
        (char, f"{pos + 1}" if len(chains) == 1 else f"{c + 1}:{pos + 1}")
        for c, chain in enumerate(chains)
        for pos, char in enumerate(chain)
        if char not in AMINO_ACID_LETTERS
    ]
    if not bad:
        return None
    shown = ", ".join(f"{char!a} at {where}" for char, where in bad[:_MAX_SHOWN])
    more = f" and {len(bad) - _MAX_SHOWN} more" if len(bad) > _MAX_SHOWN else ""
    where = "position" if len(chains) == 1 else "chain:position"
    return (
        f"not amino-acid letters ({where}): {shown}{more}; "
        f"allowed: {STANDARD_AMINO_ACIDS} and {UNKNOWN_AMINO_ACIDS} (folded as unknown)"
    )


def checked_sequences(sequences: str | Sequence[str]) -> list[str]:
    """One sequence or a list of them → normalized sequences (see `normalize_sequence`), each checked.

    Raises:
        TypeError: ``sequences`` is not a string or a sequence of strings (the index of a non-string is named).
        ValueError: no sequences, or one that breaks the rule: its 0-based index and `sequence_problem` (the letter
            and its position) are named.
    """
    if isinstance(sequences, str):
        sequences = [sequences]
    elif not isinstance(sequences, Sequence):
        raise TypeError(f"sequences must be a string or a list of strings, got {type(sequences).__name__}")
    checked = []
    for i, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise TypeError(f"sequence at index {i} is a {type(sequence).__name__}, not a string")
        sequence = normalize_sequence(sequence)
        problem = sequence_problem(sequence)
        if problem:
            raise ValueError(f"sequence at index {i}: {problem}")
        checked.append(sequence)
    if not checked:
        raise ValueError("no sequences given: pass a string or a non-empty list of strings")
    return checked


@dataclass
class EncodedBatch:
    """Padded model inputs for B sequences of up to L residues (linkers included)."""

    aatype: torch.Tensor  # (B, L) long, AF2 restype order, 20 = X
    mask: torch.Tensor  # (B, L) float, 1 for real residues (linker included)
    residue_index: torch.Tensor  # (B, L) long
    linker_mask: torch.Tensor  # (B, L) float, 0 on linker residues and padding
    chain_index: torch.Tensor  # (B, L) long, -1 on padding; the linker belongs to the chain before it


def encode_sequence(
    sequence: str, linker: str = DEFAULT_LINKER, residue_index_offset: int = DEFAULT_RESIDUE_INDEX_OFFSET
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One (possibly multi-chain) sequence → ``(aatype, residue_index, linker_mask, chain_index)``, each (L,)."""
    unknown = restype_order_with_x["X"]
    aatype: list[int] = []
    residue_index: list[int] = []
    linker_mask: list[float] = []
    chain_index: list[int] = []
    for i, chain in enumerate(sequence.upper().split(CHAIN_SEPARATOR)):
        if i > 0:
            start = len(aatype)
            aatype += [restype_order_with_x["G"]] * len(linker)
            residue_index += [start + k + (i - 1) * residue_index_offset for k in range(len(linker))]
            linker_mask += [0.0] * len(linker)
            chain_index += [i - 1] * len(linker)
        start = len(aatype)
        aatype += [restype_order_with_x.get(aa, unknown) for aa in chain]
        residue_index += [start + k + i * residue_index_offset for k in range(len(chain))]
        linker_mask += [1.0] * len(chain)
        chain_index += [i] * len(chain)
    return (
        torch.tensor(aatype, dtype=torch.long),
        torch.tensor(residue_index, dtype=torch.long),
        torch.tensor(linker_mask, dtype=torch.float32),
        torch.tensor(chain_index, dtype=torch.long),
    )


def _pad(rows: Sequence[torch.Tensor], value: float) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def encode_batch(
    sequences: Sequence[str],
    linker: str = DEFAULT_LINKER,
    residue_index_offset: int = DEFAULT_RESIDUE_INDEX_OFFSET,
) -> EncodedBatch:
    """Encode and right-pad a batch of sequences."""
    encoded = [encode_sequence(s, linker, residue_index_offset) for s in sequences]
    aatype, residue_index, linker_mask, chain_index = zip(*encoded, strict=True)
    return EncodedBatch(
        aatype=_pad(aatype, 0),
        mask=_pad([torch.ones(len(a)) for a in aatype], 0.0),
        residue_index=_pad(residue_index, 0),
        linker_mask=_pad(linker_mask, 0.0),
        chain_index=_pad(chain_index, -1),
    )
