"""FASTA records in, safe output names out.

Reading is streaming and never fails on content: a problem inside the file (sequence data before the first
header, a header without an id, bytes that are not UTF-8) becomes part of that record, and `validate_record`
reports it, so one bad record never stops the others. Only I/O errors (``OSError``) escape `read_fasta`.

Sequence policy. Accepted: blank lines, indented lines, CRLF line ends, a UTF-8 byte-order mark, gzip-compressed
files, and the sequence rule of ``fold.chains`` (shared with ``ESMFold.fold``): upper or lower case, whitespace
anywhere inside sequence lines, one trailing ``*`` (stop codon) per chain, ``:`` between the chains of a multi-chain
record (``CHAINA:CHAINB``), and exactly the residue letters of the ESM vocabulary: the 20 standard amino acids plus
``X B Z U O``, which ESMFold folds as unknown residues (``X``), as the original does. Everything else (digits, gaps
``-``/``.``, ``J``, punctuation, inner ``*``) rejects the record.

Output names. Record ids are arbitrary text; `safe_filename` and `unique_ids` turn them into names that are one
path component on every file system, and `resolve_inside` is the last guard that a path stays inside the output
directory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import string
import zlib
from collections.abc import Iterable, Iterator, MutableSet
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from esmfold_lite.sequences import CHAIN_SEPARATOR, FOLDING, normalize_sequence, sequence_problem

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record.

    Attributes:
        id: first word of the header (may be any text except whitespace; see `safe_filename` for file names).
        description: rest of the header after the id, stripped.
        sequence: upper-cased, whitespace removed, one trailing ``*`` per chain removed; chains joined by ``:``.
        line: 1-based line number of the header (of the first data line for data before any header).
        error: a problem found while parsing; `validate_record` reports it first.
    """

    id: str
    description: str
    sequence: str
    line: int
    error: str | None = None

    @property
    def chains(self) -> list[str]:
        return self.sequence.split(CHAIN_SEPARATOR)

    @property
    def num_residues(self) -> int:
        """Residues over all chains (separators not counted)."""
        return len(self.sequence) - self.sequence.count(CHAIN_SEPARATOR)


@contextlib.contextmanager
def open_unpacked(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """``path`` opened for reading bytes, unpacked if it is gzip-compressed (peeked, not sought: pipes such as
    /dev/stdin work too); a corrupt or truncated gzip file raises OSError naming it while the block reads it."""
    with open(path, "rb") as raw:
        if raw.peek(2)[:2] != _GZIP_MAGIC:
            yield raw
            return
        try:
            with gzip.GzipFile(fileobj=raw) as unpacked:
                yield unpacked
        except (EOFError, zlib.error) as exc:
            raise OSError(f"{path}: corrupt or truncated gzip file ({exc})") from exc


def read_fasta(source: str | os.PathLike | IO, keep_case: bool = False) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file (path, gzip-compressed path, or an open text/binary file) one by one.

    ``keep_case``: leave lower-case letters as they are (alignments mark insertions with them); default upper-case.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_unpacked(source) as stream:
            yield from _parse(stream, keep_case)
    else:
        yield from _parse(source, keep_case)


def count_records(path: str | os.PathLike) -> int | None:
    """The number of records (``>`` header lines) in a FASTA file, gzip too, read as bytes without parsing (for a
    progress total); None for what is not a regular file (a pipe cannot be read twice) or cannot be read."""
    if not Path(path).is_file():
        return None
    try:
        with open_unpacked(path) as stream:
            return sum(1 for line in stream if line.startswith(b">"))
    except OSError:
        return None


def _parse(lines: Iterable[str | bytes], keep_case: bool = False) -> Iterator[FastaRecord]:
    header: tuple[str, str, int, str | None] | None = None  # id, description, line, error
    chunks: list[str] = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")  # U+FFFD then fails validation with its position
        if number == 1:
            line = line.lstrip("\ufeff")
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                yield _record(header, chunks, keep_case)
            words = line[1:].strip().split(None, 1)
            error = None if words else "header line has no id"
            header = (words[0] if words else "", words[1].strip() if len(words) > 1 else "", number, error)
            chunks = []
        elif line:
            if header is None:
                header = ("", "", number, "sequence data before the first '>' header")
            chunks.append("".join(line.split()))
    if header is not None:
        yield _record(header, chunks, keep_case)


def _record(header: tuple[str, str, int, str | None], chunks: list[str], keep_case: bool = False) -> FastaRecord:
    id_, description, line, error = header
    sequence = normalize_sequence("".join(chunks), upper=not keep_case)
    return FastaRecord(id=id_, description=description, sequence=sequence, line=line, error=error)


def validate_record(record: FastaRecord, max_length: int | None = None, use: str = FOLDING) -> str | None:
    """Why `record` cannot be folded (``use``: `sequences.FOLDING`) or embedded (`sequences.LANGUAGE_MODEL`), in one
    line of ASCII without tabs, or None when it can.

    Checks in order: parse error, the sequence rule (``sequences.sequence_problem``: empty sequence, empty chain,
    characters that are not residue letters with their 1-based positions per chain), more than `max_length`
    residues over all chains.
    """
    problem = record.error or sequence_problem(record.sequence, use)
    if problem:
        return problem
    if max_length is not None and record.num_residues > max_length:
        return f"{record.num_residues} residues, more than the maximum length {max_length}"
    return None


# --- output names ----------------------------------------------------------------------------------------------

_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "._-+")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{i}" for port in ("COM", "LPT") for i in range(10)]
)
_DOT_RUNS = re.compile(r"\.{2,}")
_HASH_LEN = 8


def _short_hash(text: str) -> str:
    data = text.encode("utf-8", errors="surrogatepass")
    return hashlib.blake2b(data, digest_size=_HASH_LEN // 2).hexdigest()


def safe_filename(id: str, max_len: int = 100) -> str:
    """A file name stem made from a record id that is safe on every common file system.

    The result is one non-empty path component of at most `max_len` ASCII characters from ``A-Z a-z 0-9 . _ - +``,
    never starting with ``.`` or ``-``, never ending with ``.``, without ``..``, and never a Windows device name
    (``CON``, ``NUL``, ``COM1`` ..., with or without extension). Other characters become ``_``. An id returned
    changed (replaced characters, stripped dots, truncated, reserved) gets ``_`` + 8 hex digits of a hash of the
    original id, so distinct ids keep distinct names; an id that is already safe is returned as is. Use
    `unique_ids` for a set of ids: it also resolves the rare remaining collisions and case-only differences.
    """
    if max_len < _HASH_LEN + 2:
        raise ValueError(f"max_len must be at least {_HASH_LEN + 2}, got {max_len}")
    name = "".join(c if c in _SAFE_CHARS else "_" for c in id)
    name = _DOT_RUNS.sub(".", name).lstrip(".-").rstrip(".")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if not name:
        name = "unnamed"
    if name != id or len(name) > max_len:
        name = f"{name[: max_len - _HASH_LEN - 1]}_{_short_hash(id)}"
    return name


def unique_ids(ids: Iterable[str], max_len: int = 100, taken: MutableSet[str] | None = None) -> list[str]:
    """One safe, distinct file name stem per id, in order (deterministic for the same input).

    Each id goes through `safe_filename`; a name already taken, compared case-insensitively (macOS and Windows file
    systems are), gets the suffix ``_2``, ``_3``, ... (the first occurrence keeps its name). ``taken`` holds lower-case
    names not to use (reserved names); it is filled with the names given out.
    """
    return list(iter_unique_ids(ids, max_len, taken))


def iter_unique_ids(ids: Iterable[str], max_len: int = 100, taken: MutableSet[str] | None = None) -> Iterator[str]:
    """`unique_ids` one by one, for a stream of ids: besides ``taken`` (a set, or a disk-backed one for millions of
    ids) it keeps only the bases that occurred more than once."""
    taken = set() if taken is None else taken
    next_suffix: dict[str, int] = {}
    for id_ in ids:
        base = safe_filename(id_, max_len)
        name, k = base, next_suffix.get(base.lower(), 1)
        while name.lower() in taken:
            k += 1
            name = f"{base[: max_len - len(str(k)) - 1]}_{k}"
        if k > 1:
            next_suffix[base.lower()] = k
        taken.add(name.lower())
        yield name


def resolve_inside(outdir: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``outdir / name`` resolved (symlinks followed); raises ValueError unless it lies strictly inside `outdir`."""
    root = Path(outdir).resolve()
    try:
        target = (root / name).resolve()
    except (OSError, ValueError) as exc:  # e.g. an embedded NUL byte
        raise ValueError(f"output name {str(name)!r} is not a valid path: {exc}") from None
    if target == root or not target.is_relative_to(root):
        raise ValueError(f"output name {str(name)!r} resolves to {target}, outside the output directory {root}")
    return target
