"""esmfold-lite's SQLite databases in OUTDIR (the run state ``run_state``, fold-proteome's work queue
``work_queue``, the embedding index ``embedding_shards``): opened checked (``checked_connection``), and their
errors as OutdirError with one line naming the file and what to do: a full disk, a failing disk (both keep what is
done: run the same command again) or a damaged file (the fix each database gives). A transaction that raised did not
commit, so nothing is recorded by it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from esmfold_lite.io.atomic import atomic_path
from esmfold_lite.pipeline.outdir_lock import OutdirError

logger = logging.getLogger(__name__)

RESUME_HINT = "the proteins finished so far are kept: make room (or fix the disk) and run the same command again"


class DamagedDatabase(sqlite3.DatabaseError):
    """A database that opens but is not sound (``quick_check`` fails, tables of another shape)."""


def hot_journal(path: Path) -> Path | None:
    """The rollback journal of the database ``path`` when one is there and not empty (a process killed during a write
    transaction leaves it; SQLite rolls it back on the next read, which a read-only connection cannot do: it fails
    with "attempt to write a readonly database"), else None. A journal of a live writer is not rolled back: SQLite
    sees that writer's lock and leaves it."""
    journal = path.with_name(path.name + "-journal")
    try:
        return journal if journal.stat().st_size > 0 else None
    except OSError:
        return None


def checked_connection(
    path: Path,
    schema: str,
    tables: Mapping[str, Sequence[str]],
    kind: str,
    read_only: bool = False,
    recover: bool = False,
) -> sqlite3.Connection:
    """Connect to the database ``path`` and check it: ``quick_check``, then the columns of ``tables``
    (``DamagedDatabase`` naming ``kind`` if either fails). Unless ``read_only``, a database that is not there is
    created with ``schema``, atomically (``create_database``), so it is never seen without its tables: a file that is
    there without any (0 bytes, or emptied) has lost what it held and is ``DamagedDatabase`` too. A damaged or foreign
    file is left exactly as it was. ``read_only`` with ``recover``: opened for writing, never creating the file, so
    SQLite can roll back a killed writer's journal (``hot_journal``); the caller only reads."""
    if not (read_only or os.path.lexists(path)):
        create_database(path, schema)
    if read_only:
        mode = "rw" if recover else "ro"
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
    else:
        connection = sqlite3.connect(path)
    try:
        (verdict,) = connection.execute("PRAGMA quick_check(1)").fetchone()
        if verdict != "ok":
            raise DamagedDatabase(f"database disk image is malformed: {' '.join(verdict.split())}")  # one line
        if not connection.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]:
            empty = "empty file (0 bytes)" if path.stat().st_size == 0 else "a database without tables"
            raise DamagedDatabase(f"{empty}, not an esmfold-lite {kind}")
        for table, columns in tables.items():
            try:
                connection.execute(f"SELECT {', '.join(columns)} FROM {table} LIMIT 0")
            except sqlite3.OperationalError as exc:
                raise DamagedDatabase(f"not an esmfold-lite {kind}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection


def create_database(path: Path, schema: str) -> None:
    """Create the database ``path`` with ``schema``, atomically: it appears complete with its tables or not at all
    (``io.atomic.atomic_path``), so an empty file there is never one this created (a run killed while creating
    it leaves only a temporary file, which the next run deletes)."""
    with atomic_path(path) as temp, contextlib.closing(sqlite3.connect(temp)) as connection:
        connection.executescript(schema)


def sqlite_error_kind(exc: sqlite3.Error) -> str:
    """``full`` (disk or quota), ``io`` (the disk failed), ``damaged`` (not SQLite, corrupt, foreign) or ``other``."""
    name = getattr(exc, "sqlite_errorname", None) or ""  # Python 3.11+; SQLite's message text before
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "io"
    damaged = isinstance(exc, DamagedDatabase) or name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return "damaged" if damaged or "malformed" in text or "not a database" in text else "other"


def database_failure(path: Path, exc: sqlite3.Error, damaged_fix: str) -> str:
    """One line for an SQLite error of the database ``path``: what happened and what to do (``damaged_fix`` for a
    damaged file)."""
    kind, detail = sqlite_error_kind(exc), " ".join(str(exc).split())  # SQLite's own text may span lines
    if kind == "full":
        return f"cannot write {path}: the disk is full ({detail}); {RESUME_HINT}"
    if kind == "io":
        return f"cannot read or write {path}: the disk failed ({detail}); {RESUME_HINT}"
    if kind == "damaged":
        return f"{path} is damaged ({detail}); {damaged_fix}"
    return f"cannot use {path}: {detail}"


@contextlib.contextmanager
def database_errors(path: Path, damaged_fix: str) -> Iterator[None]:
    """Raise an ``sqlite3.Error`` of the block as OutdirError naming ``path`` (`database_failure`)."""
    try:
        yield
    except sqlite3.Error as exc:
        logger.debug("%s failed", path, exc_info=True)
        raise OutdirError(database_failure(path, exc, damaged_fix)) from exc


def remove_database(path: Path) -> None:
    """Delete the SQLite database ``path`` and its journals; OutdirError if one cannot be (a directory there)."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))):
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:
            raise OutdirError(f"cannot remove {file}: {exc.strerror or exc}; remove it yourself") from exc
