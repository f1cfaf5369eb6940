"""An output directory's run state: the settings its results came from, a record per protein. It is opened with
OUTDIR's lock (``outdir_lock``: one run at a time); its SQLite errors become OutdirError (``sqlite_errors``).

It lives in ``OUTDIR/.esmfold-lite/state.sqlite``: table ``settings`` (digest → what produced results: checkpoint
fingerprints, recycles, version) and table ``proteins``, one row per protein: its ``summary.tsv`` fields plus the
settings digest and ``files`` = ``{format: [size, mtime_ns, sha256]}``. SQLite makes each commit atomic and durable.

A protein's row is its *completion record*: committed with ``status = ok`` only after all its files are written and
synced. It counts as complete when it is ok for the same sequence and settings and every requested file is a
regular file (a symlink never is) of the recorded size whose mtime is the recorded one or, if not, whose sha256
still is. So a truncated, edited or replaced file, or one that is missing, makes the protein incomplete.

Broken state: ``state.sqlite`` is checked when it is opened (SQLite's ``quick_check`` and the tables' columns). A
damaged one (truncated, overwritten, not esmfold-lite's) has lost the completion records, and guessing them from the
files could count a half-written protein as done, so the run is refused with a message naming the file and the fix:
``overwrite`` (``--overwrite``), which recomputes every protein anyway, replaces it by an empty state; or a new
OUTDIR. An empty one (0 bytes, or no tables) is damaged too: a run state is created with its tables in one atomic
step (``sqlite_errors.create_database``), so only something else can have emptied it, and taking it for a new one
would accept other settings and leave the old results beside the new. An SQLite error later (a full or failing disk)
raises OutdirError naming the file; nothing is recorded as complete by a transaction that did not commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from esmfold_lite.io.summary_tsv import SUMMARY_COLUMNS
from esmfold_lite.pipeline.outdir_lock import STATE_DIR, OutdirError, outdir_lock
from esmfold_lite.pipeline.sqlite_errors import (
    checked_connection,
    database_errors,
    database_failure,
    remove_database,
    sqlite_error_kind,
)

logger = logging.getLogger(__name__)

STATE_NAME = "state.sqlite"
DAMAGED_STATE_FIX = (
    "which proteins are complete is lost: run again with the overwrite option (--overwrite) to fold every protein "
    "again (it replaces the damaged file), or write to a new output directory"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (digest TEXT PRIMARY KEY, json TEXT NOT NULL, used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS proteins (
    id TEXT PRIMARY KEY, length INTEGER NOT NULL, status TEXT NOT NULL,
    mean_plddt REAL, ptm REAL, seconds REAL, error TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
    sequence_hash TEXT NOT NULL DEFAULT '', settings TEXT NOT NULL DEFAULT '', files TEXT NOT NULL DEFAULT '{}',
    header TEXT NOT NULL DEFAULT ''
);
"""
_ADDED_COLUMNS = {"header": "TEXT NOT NULL DEFAULT ''"}
"""Columns of ``proteins`` that run states written by earlier versions lack: added when such a state is opened."""
_COLUMNS = (*SUMMARY_COLUMNS, "settings", "files")
_TABLES = {"settings": ("digest", "json", "used"), "proteins": _COLUMNS}
_NULLABLE = frozenset({"mean_plddt", "ptm", "seconds"})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, content: bytes) -> list[object]:
    """``[size, mtime_ns, sha256]`` of a file just written with ``content`` (what a completion record holds)."""
    info = os.lstat(path)
    return [info.st_size, info.st_mtime_ns, hashlib.sha256(content).hexdigest()]


def file_matches(path: Path, record: list[object]) -> bool:
    """Whether ``path`` is still the regular file ``record`` describes (hashing it only when its mtime changed); an
    unreadable file or a malformed record does not match."""
    try:
        size, mtime_ns, sha256 = record
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return False
        return info.st_mtime_ns == mtime_ns or sha256_file(path) == sha256
    except (OSError, TypeError, ValueError):
        return False


def _json_object(text: object) -> dict[str, object]:
    """``text`` parsed as a JSON object, or {} when it is none (a hand-edited or damaged value)."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class RunState:
    """The state of one run in ``outdir`` (see the module docstring); use :func:`open_run_state`."""

    def __init__(self, outdir: Path, connection: sqlite3.Connection) -> None:
        self.outdir = outdir
        self.path = outdir / STATE_DIR / STATE_NAME
        self.db = connection
        self.produced = False  # set once a result file or the summary is written: the run has produced something

    # --- settings ---------------------------------------------------------------------------------------------

    def settings_conflict(self, digest: str, settings: Mapping[str, object]) -> str | None:
        """Why OUTDIR's results do not fit ``settings``, or None: the last run used other settings and results
        made with them are there (results of still older settings are ``stale`` and no longer count)."""
        with database_errors(self.path, DAMAGED_STATE_FIX):
            last = self.db.execute("SELECT digest, json FROM settings ORDER BY used DESC LIMIT 1").fetchone()
            if last is None or last[0] == digest:
                return None
            (count,) = self.db.execute(
                "SELECT COUNT(*) FROM proteins WHERE status = 'ok' AND settings = ?", (last[0],)
            ).fetchone()
        if not count:
            return None
        changes = settings_differences(_json_object(last[1]), dict(settings))
        return f"{count} result(s) there were made with other settings ({'; '.join(changes)})"

    def use_settings(self, digest: str, settings: Mapping[str, object]) -> None:
        """Make ``settings`` OUTDIR's current ones (what the next run is compared with)."""
        with database_errors(self.path, DAMAGED_STATE_FIX), self.db:
            self.db.execute(
                "INSERT INTO settings VALUES (?, ?, (SELECT COALESCE(MAX(used), 0) + 1 FROM settings)) "
                "ON CONFLICT (digest) DO UPDATE SET used = excluded.used",
                (digest, json.dumps(settings, sort_keys=True)),
            )

    # --- proteins ---------------------------------------------------------------------------------------------

    def row(self, id: str) -> dict[str, object] | None:
        with database_errors(self.path, DAMAGED_STATE_FIX):
            found = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM proteins WHERE id = ?", (id,)).fetchone()
        return None if found is None else dict(zip(_COLUMNS, found, strict=True))

    def complete_row(
        self, id: str, sequence_hash: str, digest: str, paths: Mapping[str, Path]
    ) -> dict[str, object] | None:
        """The protein's row if its completion record holds for this sequence, settings and files, else None."""
        row = self.row(id)
        if row is None or row["status"] != "ok" or row["sequence_hash"] != sequence_hash or row["settings"] != digest:
            return None
        files = _json_object(row["files"])
        if all(fmt in files and file_matches(path, files[fmt]) for fmt, path in paths.items()):
            return row
        return None

    def save(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Insert or replace rows (summary fields, plus ``settings`` and ``files`` for completion records) in one
        transaction. A protein keeps its place in the summary; its other fields are replaced."""
        values = [tuple(_db_value(row, column) for column in _COLUMNS) for row in rows]
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        with database_errors(self.path, DAMAGED_STATE_FIX), self.db:  # one transaction: all rows are recorded, or none
            self.db.executemany(
                f"INSERT INTO proteins ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                values,
            )

    def set_header(self, id: str, header: str) -> None:
        """Record the FASTA header of protein ``id`` (rows of earlier versions have none); nothing else changes."""
        with database_errors(self.path, DAMAGED_STATE_FIX), self.db:
            self.db.execute("UPDATE proteins SET header = ? WHERE id = ?", (header, id))

    def summary_rows(self, digest: str) -> Iterator[dict[str, object]]:
        """Every protein ever folded into OUTDIR, in first-seen order, as ``summary.tsv`` rows. An ok row made with
        settings other than ``digest`` (kept from before an ``overwrite`` with new settings) says ``stale``."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM proteins ORDER BY rowid"
        with database_errors(self.path, DAMAGED_STATE_FIX):
            for values in self.db.execute(query):
                row = dict(zip(_COLUMNS, values, strict=True))
                if row["status"] == "ok" and row["settings"] != digest:
                    row["status"] = "stale"
                    row["error"] = "folded with other settings than the last run's; run them again to recompute"
                yield {field: row[field] for field in SUMMARY_COLUMNS}

    def counts(self) -> dict[str, int]:
        with database_errors(self.path, DAMAGED_STATE_FIX):
            return dict(self.db.execute("SELECT status, COUNT(*) FROM proteins GROUP BY status").fetchall())


def _db_value(row: Mapping[str, object], column: str) -> object:
    value = row.get(column)
    if column == "files":
        return json.dumps(value or {}, sort_keys=True)
    return "" if value is None and column not in _NULLABLE else value


def _describe(value: object) -> str:
    """A setting as a user reads it: a checkpoint fingerprint (``weights.fingerprint``) by its file names and sizes,
    its registry name or URL; an unset one (None) as ``not set``, yes/no, text and numbers as they are, lists
    comma-separated; anything else as JSON (at most 120 characters)."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list):
        return ", ".join(map(_describe, value)) or "none"
    if isinstance(value, dict) and isinstance(value.get("files"), list):
        return ", ".join(
            f"{f.get('file')} ({int(f.get('size') or 0):,} bytes)" for f in value["files"] if isinstance(f, dict)
        )
    if isinstance(value, dict) and len(value) == 1 and ("name" in value or "url" in value):
        return str(next(iter(value.values())))
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 120 else text[:117] + "..."


def settings_differences(old: Mapping[str, object], new: Mapping[str, object], limit: int = 4) -> list[str]:
    """``key: old -> new`` for the top-level settings that differ, keys spelled as the flags that set them
    (``num_recycles``: ``num-recycles``), values as ``_describe`` words them (checkpoints by their files), and
    "other contents" when only what is in them changed."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b, name = _describe(old.get(key)), _describe(new.get(key)), key.replace("_", "-")
            changes.append(f"{name}: {a} -> {b}" if a != b else f"{name}: {a}, other contents")
    return changes[:limit] + ([f"and {len(changes) - limit} more"] if len(changes) > limit else [])


@contextlib.contextmanager
def open_run_state(outdir: str | os.PathLike, replace_damaged: bool = False) -> Iterator[RunState]:
    """Create ``outdir`` if needed, take its lock and open its state; yields a :class:`RunState`.

    Raises OutdirError when OUTDIR is busy with another run or unusable, or its ``state.sqlite`` is damaged (unless
    ``replace_damaged``: then it is replaced by an empty state; see the module docstring). If this call created
    OUTDIR (and parents) and the run ends before ``produced`` was set, it removes what it created, leaving nothing
    (``pipeline.outdir_lock``).
    """
    with outdir_lock(outdir) as locked:
        state = RunState(locked.path, _open_database(locked.path / STATE_DIR / STATE_NAME, replace_damaged))
        try:
            yield state
        finally:
            state.db.close()
            locked.produced = state.produced


def _add_missing_columns(path: Path) -> None:
    """Bring a run state written by an earlier version up to date (``_ADDED_COLUMNS``); anything else about the file
    is left for ``checked_connection`` to judge."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as db:
        present = {row[1] for row in db.execute("PRAGMA table_info(proteins)")}
        if "id" not in present:  # no proteins table: new, empty or foreign
            return
        with db:
            for column, definition in _ADDED_COLUMNS.items():
                if column not in present:
                    db.execute(f"ALTER TABLE proteins ADD COLUMN {column} {definition}")


def _open_database(path: Path, replace_damaged: bool) -> sqlite3.Connection:
    """The run state's database, opened (created if missing) and checked; a damaged one raises OutdirError naming
    the fix, or with ``replace_damaged`` is deleted and created anew (see the module docstring)."""
    if path.is_symlink():
        raise OutdirError(f"{path} is a symbolic link; esmfold-lite does not write through links: remove it")
    if os.path.lexists(path) and not path.is_file():
        raise OutdirError(f"{path} is not a regular file (esmfold-lite keeps its run state there): remove it")
    try:
        _add_missing_columns(path)
        return checked_connection(path, _SCHEMA, _TABLES, "run state")
    except sqlite3.Error as exc:
        if not replace_damaged or sqlite_error_kind(exc) != "damaged":
            logger.debug("opening %s failed", path, exc_info=True)
            raise OutdirError(database_failure(path, exc, DAMAGED_STATE_FIX)) from exc
        logger.warning("%s is damaged (%s); overwrite: replacing it by an empty run state", path, exc)
    remove_database(path)
    with database_errors(path, DAMAGED_STATE_FIX):
        return checked_connection(path, _SCHEMA, _TABLES, "run state")
