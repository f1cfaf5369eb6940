"""Multiple sequence alignments for the MSA Transformer: a3m / a2m / aligned FASTA in, equal-length rows out.

Reading rules (``read_msa``; ``msa_from_rows`` applies the same to rows given in Python):

* The first record is the query; the others are its aligned homologs. Lines starting with ``#`` before the first
  ``>`` header are comments and ignored (ColabFold/MMseqs2 a3m files start with one such as ``#14\t1``).
* Insertions: in a3m and a2m files lower-case letters are residues inserted relative to the query's columns, and
  ``.`` is the gap aligned to such an insertion in other rows; both are removed (as fair-esm's examples do). A file
  is read this way when any row holds a lower-case letter. Without lower-case letters (plain aligned FASTA) ``.`` is
  a gap like ``-``.
* ``*`` is removed; then every row may hold only the residue letters of the ESM vocabulary and ``-`` (gap), and must
  have as many columns as the query. A row that breaks this raises ``ValueError`` naming the file, the row's id and
  its line; it is never silently dropped or cut.
* Columns where the query has a gap are removed, so the alignment columns are the query's residues, in order.

Depth (``select_rows``): the MSA Transformer was trained on at most 1,024 rows and its memory grows with depth x
width, so an MSA is cut to ``max_depth`` rows (default ``DEFAULT_MAX_DEPTH`` = 128, the depth of fair-esm's contact
example). Strategy ``"diverse"`` (default): keep the query, then repeatedly add the row with the largest mean
Hamming distance to the rows kept so far (earliest row on ties), the greedy maximum-diversity selection of the MSA
Transformer paper; ``"first"``: the first rows in file order (hhblits/jackhmmer list them by E-value). Kept rows stay
in file order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from esmfold_lite.io.fasta import open_text, read_fasta
from esmfold_lite.sequences import AMINO_ACID_LETTERS

DEFAULT_MAX_DEPTH = 128
SELECTIONS = ("diverse", "first")
GAP = "-"
_ALLOWED = AMINO_ACID_LETTERS | {GAP}


@dataclass(frozen=True)
class MSA:
    """An alignment ready for the model: ``rows[0]`` is the query, all rows have ``width`` upper-case columns.

    Attributes:
        ids: one id per row (the FASTA ids, or ``row 1``, ``row 2``, ... for rows given in Python).
        rows: aligned rows, residue letters and ``-``; the query has no gaps.
        source: where it came from (a path, or ``"MSA"``), for messages.
    """

    ids: tuple[str, ...]
    rows: tuple[str, ...]
    source: str = "MSA"

    @property
    def query(self) -> str:
        return self.rows[0]

    @property
    def depth(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return len(self.rows[0])


def _clean(ids: Sequence[str], rows: Sequence[str], lines: Sequence[int | None], source: str) -> MSA:
    """Apply the reading rules (module docstring) to raw rows."""
    if not rows:
        raise ValueError(f"{source}: no sequences; an MSA needs at least its query")
    insertions = any(char.islower() for row in rows for char in row)
    cleaned = []
    for row_id, row, line in zip(ids, rows, lines, strict=True):
        where = f"{source}: row {row_id!r}" + (f" (line {line})" if line is not None else "")
        if insertions:
            row = "".join(char for char in row if not (char.islower() or char == "."))
        else:
            row = row.replace(".", GAP)
        row = row.replace("*", "").upper()
        bad = sorted(set(row) - _ALLOWED)
        if bad:
            raise ValueError(
                f"{where} holds {', '.join(map(ascii, bad))}, which are neither residue letters nor gaps ('-', '.'); "
                "fix or remove the row"
            )
        if cleaned and len(row) != len(cleaned[0]):
            raise ValueError(
                f"{where} has {len(row)} alignment columns but the query has {len(cleaned[0])}; rows must be aligned "
                "to the query (a3m/a2m: lower-case letters and '.' are insertions; aligned FASTA: '-' or '.' gaps)"
            )
        cleaned.append(row)
    keep = [i for i, char in enumerate(cleaned[0]) if char != GAP]
    if not keep:
        raise ValueError(f"{source}: the query (first row, {ids[0]!r}) has no residues")
    if len(keep) < len(cleaned[0]):
        cleaned = ["".join(row[i] for i in keep) for row in cleaned]
    return MSA(ids=tuple(ids), rows=tuple(cleaned), source=source)


def _without_leading_comments(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` with the ``#`` comment lines before the first ``>`` header blanked (line numbers stay right)."""
    lines = iter(lines)
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            yield "\n"
            continue
        yield line
        if text.startswith(">"):
            break
    yield from lines


def read_msa(path: str | os.PathLike) -> MSA:
    """The MSA in an a3m, a2m or aligned FASTA file (gzip and the encodings of ``io.fasta.open_text`` allowed);
    raises ``ValueError`` naming a bad row."""
    with open_text(path) as stream:
        records = list(read_fasta(_without_leading_comments(stream), keep_case=True))
    for record in records:
        if record.error:
            raise ValueError(f"{path}: record {record.id!r} (line {record.line}): {record.error}")
    ids = [record.id for record in records]
    return _clean(ids, [record.sequence for record in records], [record.line for record in records], str(path))


def msa_from_rows(rows: Sequence[str], source: str = "MSA") -> MSA:
    """An MSA from aligned rows given as strings (query first), read with the same rules as a file."""
    return _clean([f"row {i + 1}" for i in range(len(rows))], list(rows), [None] * len(rows), source)


def as_msa(item: MSA | str | os.PathLike | Sequence[str]) -> MSA:
    """An ``MSA`` as is, a path read with ``read_msa``, or a list of aligned rows (``msa_from_rows``)."""
    if isinstance(item, MSA):
        return item
    if isinstance(item, (str, os.PathLike)):
        return read_msa(item)
    return msa_from_rows(item)


def select_rows(msa: MSA, max_depth: int | None = DEFAULT_MAX_DEPTH, strategy: str = "diverse") -> MSA:
    """At most ``max_depth`` rows of ``msa`` (None: all), the query always among them; see the module docstring."""
    if strategy not in SELECTIONS:
        raise ValueError(f"unknown row selection {strategy!r}; use one of {', '.join(SELECTIONS)}")
    if max_depth is not None and max_depth < 1:
        raise ValueError(f"max_depth must be at least 1 (the query), got {max_depth}")
    if max_depth is None or msa.depth <= max_depth:
        return msa
    if strategy == "first":
        chosen = list(range(max_depth))
    else:
        codes = np.frombuffer("".join(msa.rows).encode("ascii"), dtype=np.uint8).reshape(msa.depth, msa.width)
        distance_sum = (codes != codes[0]).sum(1, dtype=np.int64)  # to the chosen rows; same argmax as the mean
        available = np.ones(msa.depth, dtype=bool)
        available[0] = False
        chosen = [0]
        while len(chosen) < max_depth:
            candidates = np.flatnonzero(available)
            pick = int(candidates[np.argmax(distance_sum[candidates])])
            chosen.append(pick)
            available[pick] = False
            distance_sum += (codes != codes[pick]).sum(1)
        chosen.sort()
    return MSA(ids=tuple(msa.ids[i] for i in chosen), rows=tuple(msa.rows[i] for i in chosen), source=msa.source)
