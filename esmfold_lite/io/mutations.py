"""Mutation strings such as ``A42G`` and ``A42G:L50P``, checked against a wild-type sequence.

The notation of deep mutational scans and of fair-esm's ``predict.py``: wild-type letter, position, mutant letter;
the substitutions of a multi-mutant are joined by ``:``. Letters may be upper or lower case and are the residue
letters of the ESM vocabulary (the 20 standard amino acids and ``X B Z U O``). Positions are numbered so that the
wild type's first residue is ``offset_idx`` (default 1, so positions are 1-based; fair-esm's ``--offset-idx``
means the same, with default 0). Every error is a ``ValueError`` whose message starts with the mutation string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from esmfold_lite.sequences import AMINO_ACID_LETTERS, LANGUAGE_MODEL, STANDARD_AMINO_ACIDS, sequence_problem

SEPARATOR = ":"
_SUBSTITUTION = re.compile(r"([A-Za-z])([+-]?[0-9]+)([A-Za-z])")


@dataclass(frozen=True)
class Substitution:
    """One residue change: ``index`` is 0-based in the wild type."""

    index: int
    wild_type: str
    mutant: str


@dataclass(frozen=True)
class Mutation:
    """A single or multiple mutant: ``text`` as given, its substitutions in the order given (distinct positions)."""

    text: str
    substitutions: tuple[Substitution, ...]

    def apply(self, wild_type: str) -> str:
        """The mutant sequence."""
        residues = list(wild_type)
        for substitution in self.substitutions:
            residues[substitution.index] = substitution.mutant
        return "".join(residues)


def check_wild_type(sequence: str) -> str:
    """``sequence`` upper-cased with whitespace removed; ValueError when it is empty or holds non-residue letters."""
    sequence = "".join(sequence.split()).upper()
    problem = sequence_problem(sequence, LANGUAGE_MODEL)  # one chain; B Z U O are tokens of their own
    if problem is not None:
        raise ValueError(f"wild-type sequence: {problem}")
    return sequence


def parse_mutation(text: str, wild_type: str, offset_idx: int = 1) -> Mutation:
    """Parse ``text`` and check every substitution against ``wild_type`` (already checked by `check_wild_type`).

    Raises:
        ValueError: naming ``text`` and saying what is wrong: not of the form ``A42G``, a letter that is not a
            residue, a position outside the wild type, a wild-type letter that differs from the sequence, or one
            position changed twice.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"mutation {text!r}: empty; write it like A42G, or A42G:L50P for a multiple mutant")
    first, last = offset_idx, offset_idx + len(wild_type) - 1
    substitutions: list[Substitution] = []
    for part in text.split(SEPARATOR):
        match = _SUBSTITUTION.fullmatch(part.strip())
        if match is None:
            raise ValueError(
                f"mutation {text!r}: {part.strip()!r} is not a substitution like A42G (wild-type letter, position, "
                f"mutant letter; ':' joins the substitutions of a multiple mutant)"
            )
        wt, position, mt = match.group(1).upper(), int(match.group(2)), match.group(3).upper()
        for letter in (wt, mt):
            if letter not in AMINO_ACID_LETTERS:
                raise ValueError(f"mutation {text!r}: {letter!r} is not an amino-acid letter")
        index = position - offset_idx
        if not 0 <= index < len(wild_type):
            raise ValueError(
                f"mutation {text!r}: position {position} is outside the wild type (positions {first}..{last} with "
                f"offset_idx {offset_idx}, the number of its first residue)"
            )
        if wild_type[index] != wt:
            raise ValueError(
                f"mutation {text!r}: the wild type has {wild_type[index]} at position {position}, not {wt} "
                f"(offset_idx {offset_idx} numbers its first residue; is the offset right?)"
            )
        if any(s.index == index for s in substitutions):
            raise ValueError(f"mutation {text!r}: position {position} is changed twice")
        substitutions.append(Substitution(index=index, wild_type=wt, mutant=mt))
    return Mutation(text=text, substitutions=tuple(substitutions))


def all_single_mutants(wild_type: str, offset_idx: int = 1) -> Iterator[Mutation]:
    """Every single substitution to another standard amino acid, position by position in ``ACDEF...`` order."""
    for index, wt in enumerate(wild_type):
        for mt in STANDARD_AMINO_ACIDS:
            if mt != wt:
                yield Mutation(f"{wt}{index + offset_idx}{mt}", (Substitution(index, wt, mt),))
