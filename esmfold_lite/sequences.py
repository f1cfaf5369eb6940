"""Protein sequences as users write them: the residue letters and the one rule every entry point checks.

`normalize_sequence` accepts upper or lower case, whitespace anywhere and one trailing ``*`` (stop codon) per chain;
`sequence_problem` then allows exactly the residue letters of the ESM vocabulary, the 20 standard amino acids plus
``X B Z U O`` (unknown, ambiguous and rare residues: ESMFold folds them as unknown, the language models read each as a
token of its own), in one or more non-empty chains separated by ``:``. Everything else (digits, gaps ``-``/``.``,
``J``, punctuation, an inner ``*``, non-ASCII letters) is refused. For folding at most `MAX_CHAINS` chains (the chain
ids output files can name); a language model reads one chain. The FASTA validator, ``ESMFold.fold``, the language
models' ``embed``, MSA reading and mutation parsing all use these, so the rule is written once.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

CHAIN_SEPARATOR = ":"
MAX_CHAINS = 62  # chain ids A-Z, a-z, 0-9: one character each, as PDB files (and ``io.structure.CHAIN_IDS``) have them
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
UNKNOWN_AMINO_ACIDS = "XBZUO"  # in the ESM vocabulary; ESMFold treats them as X
AMINO_ACID_LETTERS = frozenset(STANDARD_AMINO_ACIDS + UNKNOWN_AMINO_ACIDS)


FOLDING = "folding"
LANGUAGE_MODEL = "language model"
_USE_WORDS = {
    FOLDING: ("this sequence is not folded", "which ESMFold folds as unknown residues"),
    LANGUAGE_MODEL: ("this sequence is refused", "unknown, ambiguous and rare residues, each a token of its own"),
}
"""What `sequence_problem`'s message says, by what the sequence is for: what happens to a sequence with letters that
are not residue letters, and what becomes of ``X B Z U O``."""

_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)  # ASCII only: keeps positions stable
_MAX_SHOWN = 5  # offending characters listed in a problem description


def normalize_sequence(text: str, upper: bool = True) -> str:
    """``text`` with whitespace removed, ASCII letters upper-cased (unless ``upper=False``, e.g. for alignments that
    mark insertions in lower case) and one trailing ``*`` per chain dropped."""
    text = "".join(text.split())
    chains = (text.translate(_UPPER) if upper else text).split(CHAIN_SEPARATOR)
    return CHAIN_SEPARATOR.join(chain[:-1] if chain.endswith("*") else chain for chain in chains)


def sequence_problem(sequence: str, use: str = FOLDING) -> str | None:
    """Why a `normalize_sequence` result cannot be used (one line of ASCII, no tabs), or None when it can.

    Checks in order: empty sequence, empty chain, the number of chains (``use``: `FOLDING`, at most `MAX_CHAINS`;
    `LANGUAGE_MODEL`, one), characters that are not residue letters (the first few with their 1-based positions,
    counted per chain and written ``chain:position`` for complexes). ``use`` also words what the message says
    happens to the sequence (not folded, refused) and of the letters ``X B Z U O`` (ESMFold folds them as unknown, a
    language model reads each as a token of its own).
    """
    if use not in _USE_WORDS:
        raise ValueError(f"use must be one of {', '.join(map(repr, _USE_WORDS))}, not {use!r}")
    if not sequence:
        return "empty sequence"
    chains = sequence.split(CHAIN_SEPARATOR)
    empty = [str(i + 1) for i, chain in enumerate(chains) if not chain]
    if empty:
        return f"empty chain {', '.join(empty)} of {len(chains)} (':' separates chains)"
    if use == LANGUAGE_MODEL and len(chains) > 1:
        return f"{len(chains)} chains separated by ':'; a language model reads one chain per sequence"
    if len(chains) > MAX_CHAINS:
        return f"{len(chains)} chains, more than the {MAX_CHAINS} that output files can name (A-Z, a-z, 0-9)"
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
    fate, unknown = _USE_WORDS[use]
    return (
        f"not amino-acid letters ({where}): {shown}{more}; {fate}. "
        f"Allowed: the 20 amino acids {STANDARD_AMINO_ACIDS} and {UNKNOWN_AMINO_ACIDS} ({unknown})"
    )


def checked_sequences(sequences: str | Sequence[str], use: str = FOLDING) -> list[str]:
    """One sequence or a list of them → normalized sequences (see `normalize_sequence`), each checked for ``use``.

    Raises:
        TypeError: ``sequences`` is not a string or a sequence of strings (the index of a non-string is named).
        ValueError: no sequences, or one that breaks the rule: its 0-based index and `sequence_problem` (the letter
            and its position) are named.
    """
    if isinstance(sequences, str):
        sequences = [sequences]
    elif isinstance(sequences, bytes | bytearray):
        raise TypeError("sequences must be a string or a list of strings, got bytes: decode them first")
    elif not isinstance(sequences, Sequence):
        raise TypeError(f"sequences must be a string or a list of strings, got {type(sequences).__name__}")
    checked = []
    for i, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise TypeError(f"sequence at index {i} is a {type(sequence).__name__}, not a string")
        sequence = normalize_sequence(sequence)
        problem = sequence_problem(sequence, use)
        if problem:
            raise ValueError(f"sequence at index {i}: {problem}")
        checked.append(sequence)
    if not checked:
        raise ValueError("no sequences given: pass a string or a non-empty list of strings")
    return checked
