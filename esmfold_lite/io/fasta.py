"""FASTA records in, safe output names out.

Reading is streaming and never fails on content: a problem inside the file (sequence data before the first
header, a header without an id, bytes that are not valid text) becomes part of that record, and `validate_record`
reports it, so one bad record never stops the others. Only I/O errors (``OSError``) escape `read_fasta`.

Text encoding (`open_text`, for every text file esmfold-lite reads: FASTA, MSAs, mutation tables): UTF-8, with or
without a byte-order mark; UTF-16 and UTF-32 are recognised by their byte-order mark or, without one, by the zero
bytes that ASCII text has in them, decoded, and logged (``iconv -f UTF-16 -t UTF-8`` converts such a file for good).

Sequence policy. Accepted: blank lines, indented lines, CRLF line ends, gzip-compressed files, and the sequence
rule of ``fold.chains`` (shared with ``ESMFold.fold``): upper or lower case, whitespace anywhere inside sequence
lines, one trailing ``*`` (stop codon) per chain, ``:`` between the chains of a multi-chain record
(``CHAINA:CHAINB``), and exactly the residue letters of the ESM vocabulary: the 20 standard amino acids plus
``X B Z U O``, which ESMFold folds as unknown residues (``X``), as the original does. Everything else (digits, gaps
``-``/``.``, ``J``, punctuation, inner ``*``) rejects the record.

Output names. Record ids are arbitrary text; `safe_filename` and `unique_ids` turn them into names that are one
path component on every file system, and `resolve_inside` is the last guard that a path stays inside the output
directory.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import io
import logging
import os
import re
import string
import zlib
from collections.abc import Iterable, Iterator, MutableSet
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from esmfold_lite.sequences import CHAIN_SEPARATOR, FOLDING, normalize_sequence, sequence_problem

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_ENCODING_SAMPLE = 64  # bytes looked at for the zero-byte pattern of UTF-16/UTF-32 without a byte-order mark
_DECODED = {
    "utf-32": "UTF-32 (with a byte-order mark)",
    "utf-32-le": "UTF-32 little-endian (no byte-order mark)",
    "utf-32-be": "UTF-32 big-endian (no byte-order mark)",
    "utf-16": "UTF-16 (with a byte-order mark)",
    "utf-16-le": "UTF-16 little-endian (no byte-order mark)",
    "utf-16-be": "UTF-16 big-endian (no byte-order mark)",
}
"""The encodings other than UTF-8 that `text_encoding` finds, as a message names them."""


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
        except EOFError as exc:
            raise _gzip_error(path, "truncated gzip file (it ends before its end marker)") from exc
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise _gzip_error(path, "damaged gzip file (its compressed data do not unpack)") from exc


def _gzip_error(path: str | os.PathLike, problem: str) -> OSError:
    """An OSError whose text names ``path`` and whose ``strerror`` (what messages that name the file themselves
    show) says ``problem`` and the fix."""
    error = OSError(f"{path}: {problem}: copy or compress it again")
    error.strerror = f"{problem}: copy or compress it again"
    return error


def text_encoding(head: bytes) -> str:
    """The encoding of text that starts with the bytes ``head`` (a few dozen are enough), as Python names it.

    A byte-order mark decides (``utf-8-sig``, ``utf-16``, ``utf-32``). Without one, ``head`` read as little- or
    big-endian code units tells UTF-32 (every 4-byte unit a character, 1 to 0x10FFFF) and UTF-16 (no unit zero and
    at least half of them below 0x100: the zero high byte of mostly-ASCII text), giving ``utf-32-le``,
    ``utf-32-be``, ``utf-16-le`` or ``utf-16-be``; UTF-8 text has such zero bytes only if it holds NUL characters
    at every other (or fourth) byte. Anything else is ``utf-8``.
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return encoding
    for name, width in (("utf-32", 4), ("utf-16", 2)):
        for order, byteorder in (("le", "little"), ("be", "big")):
            units = [int.from_bytes(head[i : i + width], byteorder) for i in range(0, len(head) - width + 1, width)]
            if len(units) * width < 4 or 0 in units:
                continue
            characters = max(units) <= 0x10FFFF if width == 4 else 2 * sum(u < 0x100 for u in units) >= len(units)
            if characters:
                return f"{name}-{order}"
    return "utf-8"


@contextlib.contextmanager
def open_text(
    path: str | os.PathLike, newline: str = "\n", errors: str = "replace", announce: bool = True
) -> Iterator[IO[str]]:
    """``path`` (gzip-compressed or not: `open_unpacked`) opened as text in the encoding `text_encoding` finds.

    ``newline``: as for ``open``; the default ends lines at LF only, as reading bytes does (``""`` for the csv
    module). ``errors``: as for ``open``; the default turns bytes that are not valid text into U+FFFD, which
    `validate_record` then reports with its position. A file decoded as UTF-16 or UTF-32 is logged (INFO) unless
    ``announce`` is False.
    """
    with open_unpacked(path) as stream:
        encoding = text_encoding(stream.peek(_ENCODING_SAMPLE)[:_ENCODING_SAMPLE])
        if announce and encoding in _DECODED:
            log.info("%s is %s text: decoding it as such", path, _DECODED[encoding])
        with io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline=newline) as text:
            yield text


def read_fasta(source: str | os.PathLike | IO, keep_case: bool = False) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file (path, gzip-compressed path, or an open text/binary file) one by one. A path
    is read in the encoding it is in (`open_text`); an open binary file is read as UTF-8.

    ``keep_case``: leave lower-case letters as they are (alignments mark insertions with them); default upper-case.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_text(source) as stream:
            yield from _parse(stream, keep_case)
    else:
        yield from _parse(source, keep_case)


def count_records(path: str | os.PathLike) -> int | None:
    """The number of records (``>`` header lines) in a FASTA file, gzip and any encoding `open_text` reads too,
    without parsing (for a progress total); None for what is not a regular file (a pipe cannot be read twice) or
    cannot be read."""
    if not Path(path).is_file():
        return None
    try:
        with open_text(path, announce=False) as stream:
            return sum(1 for line in stream if line.startswith(">"))
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
