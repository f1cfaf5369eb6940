"""An output directory's run state: one run at a time, the settings its results came from, a record per protein.

Everything lives in ``OUTDIR/.esmfold-lite/``:

- ``lock``: held for the whole run with ``filelock`` (an OS lock, ``flock``), so a second run on the same OUTDIR
  stops at once, while a lock left by a killed run (even SIGKILL) is free again: the OS drops it with the process.
  Temporary files of interrupted writes are deleted only while the lock is held, never another live run's.
- ``owner.json``: pid, host and start time of the run holding the lock, for the busy message.
- ``state.sqlite``: table ``settings`` (digest → what produced results: checkpoint fingerprints, recycles, version)
  and table ``proteins``, one row per protein: its ``summary.tsv`` fields plus the settings digest and
  ``files`` = ``{format: [size, mtime_ns, sha256]}``. SQLite makes each commit atomic and durable.

A protein's row is its *completion record*: committed with ``status = ok`` only after all its files are written and
synced. It counts as complete when it is ok for the same sequence and settings and every requested file is a
regular file (a symlink never is) of the recorded size whose mtime is the recorded one or, if not, whose sha256
still is. So a truncated, edited or replaced file, or one that is missing, makes the protein incomplete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from filelock import FileLock, Timeout

from esmfold_lite.io.atomic import atomic_write_text, remove_stale_temp_files
from esmfold_lite.io.outputs import SUMMARY_COLUMNS

logger = logging.getLogger(__name__)

STATE_DIR = ".esmfold-lite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (digest TEXT PRIMARY KEY, json TEXT NOT NULL, used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS proteins (
    id TEXT PRIMARY KEY, length INTEGER NOT NULL, status TEXT NOT NULL,
    mean_plddt REAL, ptm REAL, seconds REAL, error TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
    sequence_hash TEXT NOT NULL DEFAULT '', settings TEXT NOT NULL DEFAULT '', files TEXT NOT NULL DEFAULT '{}'
);
"""
_COLUMNS = (*SUMMARY_COLUMNS, "settings", "files")
_NULLABLE = frozenset({"mean_plddt", "ptm", "seconds"})


class OutdirError(Exception):
    """The output directory cannot be used: busy with another run, not a directory, not writable, a planted link."""


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
    """Whether ``path`` is still the regular file ``record`` describes (hashing it only when its mtime changed)."""
    size, mtime_ns, sha256 = record
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        return False
    return info.st_mtime_ns == mtime_ns or sha256_file(path) == sha256


def _first_missing_ancestor(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (what ``mkdir -p`` will create), or None."""
    missing = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing


class RunState:
    """The state of one run in ``outdir`` (see the module docstring); use :func:`open_run_state`."""

    def __init__(self, outdir: Path, connection: sqlite3.Connection) -> None:
        self.outdir = outdir
        self.db = connection
        self.produced = False  # set once a result file or the summary is written: the run has produced something

    # --- settings ---------------------------------------------------------------------------------------------

    def settings_conflict(self, digest: str, settings: Mapping[str, object]) -> str | None:
        """Why OUTDIR's results do not fit ``settings``, or None: the last run used other settings and results
        made with them are there (results of still older settings are ``stale`` and no longer count)."""
        last = self.db.execute("SELECT digest, json FROM settings ORDER BY used DESC LIMIT 1").fetchone()
        if last is None or last[0] == digest:
            return None
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM proteins WHERE status = 'ok' AND settings = ?", (last[0],)
        ).fetchone()
        if not count:
            return None
        changes = _differences(json.loads(last[1]), dict(settings))
        return f"{count} result(s) there were made with other settings ({'; '.join(changes)})"

    def use_settings(self, digest: str, settings: Mapping[str, object]) -> None:
        """Make ``settings`` OUTDIR's current ones (what the next run is compared with)."""
        with self.db:
            self.db.execute(
                "INSERT INTO settings VALUES (?, ?, (SELECT COALESCE(MAX(used), 0) + 1 FROM settings)) "
                "ON CONFLICT (digest) DO UPDATE SET used = excluded.used",
                (digest, json.dumps(settings, sort_keys=True)),
            )

    # --- proteins ---------------------------------------------------------------------------------------------

    def row(self, id: str) -> dict[str, object] | None:
        found = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM proteins WHERE id = ?", (id,)).fetchone()
        return None if found is None else dict(zip(_COLUMNS, found, strict=True))

    def complete_row(
        self, id: str, sequence_hash: str, digest: str, paths: Mapping[str, Path]
    ) -> dict[str, object] | None:
        """The protein's row if its completion record holds for this sequence, settings and files, else None."""
        row = self.row(id)
        if row is None or row["status"] != "ok" or row["sequence_hash"] != sequence_hash or row["settings"] != digest:
            return None
        files = json.loads(row["files"])
        if all(fmt in files and file_matches(path, files[fmt]) for fmt, path in paths.items()):
            return row
        return None

    def save(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Insert or replace rows (summary fields, plus ``settings`` and ``files`` for completion records) in one
        transaction. A protein keeps its place in the summary; its other fields are replaced."""
        values = [tuple(_db_value(row, column) for column in _COLUMNS) for row in rows]
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        with self.db:
            self.db.executemany(
                f"INSERT INTO proteins ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                values,
            )

    def summary_rows(self, digest: str) -> Iterator[dict[str, object]]:
        """Every protein ever folded into OUTDIR, in first-seen order, as ``summary.tsv`` rows. An ok row made with
        settings other than ``digest`` (kept from before an ``overwrite`` with new settings) says ``stale``."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM proteins ORDER BY rowid"
        for values in self.db.execute(query):
            row = dict(zip(_COLUMNS, values, strict=True))
            if row["status"] == "ok" and row["settings"] != digest:
                row["status"] = "stale"
                row["error"] = "folded with other settings than the last run's; run them again to recompute"
            yield {field: row[field] for field in SUMMARY_COLUMNS}

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM proteins GROUP BY status").fetchall())


def _db_value(row: Mapping[str, object], column: str) -> object:
    value = row.get(column)
    if column == "files":
        return json.dumps(value or {}, sort_keys=True)
    return "" if value is None and column not in _NULLABLE else value


def _differences(old: Mapping[str, object], new: Mapping[str, object], limit: int = 4) -> list[str]:
    """``key: old → new`` for the top-level settings that differ (checkpoints summarised by their flat values)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b = (json.dumps(x.get(key), sort_keys=True, separators=(",", ":")) for x in (old, new))
            short = [s if len(s) <= 120 else s[:117] + "..." for s in (a, b)]
            changes.append(f"{key}: {short[0]} -> {short[1]}")
    return changes[:limit] + ([f"and {len(changes) - limit} more"] if len(changes) > limit else [])


@contextlib.contextmanager
def open_run_state(outdir: str | os.PathLike) -> Iterator[RunState]:
    """Create ``outdir`` if needed, take its lock and open its state; yields a :class:`RunState`.

    Raises OutdirError when OUTDIR is busy with another run or unusable. If this call created OUTDIR (and parents)
    and the run ends with an exception before ``produced`` was set, it removes what it created, leaving nothing.
    """
    outdir = Path(outdir)
    created = _first_missing_ancestor(outdir.absolute())
    if os.path.lexists(outdir) and not outdir.is_dir():
        raise OutdirError(f"output directory {outdir} exists and is not a directory")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as exc:
        if created is not None:
            _remove_created(outdir.absolute(), created)
        raise OutdirError(f"output directory {outdir} is not usable: {exc.strerror or exc}") from exc
    outdir, created = outdir.resolve(), created.resolve() if created is not None else None
    state_dir = outdir / STATE_DIR
    if state_dir.is_symlink() or (state_dir.exists() and not state_dir.is_dir()):
        raise OutdirError(f"{state_dir} is not a directory (esmfold-lite keeps its run state there): remove it")
    state_dir.mkdir(exist_ok=True)
    lock = FileLock(state_dir / "lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutdirError(f"output directory {outdir} is in use by another esmfold-lite run{_owner(state_dir)}; "
                          "wait for it to finish, or write to another output directory") from None  # fmt: skip
    state = None
    try:
        atomic_write_text(
            state_dir / "owner.json",
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n",
        )
        for directory in (outdir, state_dir):
            for path in remove_stale_temp_files(directory):
                logger.info("removed %s, left by an interrupted run", path.name)
        database = state_dir / "state.sqlite"
        if database.is_symlink():
            raise OutdirError(f"{database} is a symbolic link; esmfold-lite does not write through links: remove it")
        connection = sqlite3.connect(database)
        connection.executescript(_SCHEMA)
        state = RunState(outdir, connection)
        yield state
    except BaseException:
        if created is not None and (state is None or not state.produced):
            if state is not None:
                state.db.close()
            _remove_created(outdir, created)
        raise
    finally:
        if state is not None:
            state.db.close()
        lock.release()


def _owner(state_dir: Path) -> str:
    try:
        owner = json.loads((state_dir / "owner.json").read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        return f" (pid {owner['pid']} on {owner['host']}, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _remove_created(outdir: Path, created: Path) -> None:
    """Remove the run state in ``outdir`` and the directories from ``outdir`` up to ``created`` (which this run
    made), as long as they hold nothing else."""
    state_dir = outdir / STATE_DIR
    if state_dir.is_dir() and not state_dir.is_symlink():
        for name in ("state.sqlite", "state.sqlite-journal", "owner.json", "lock"):
            (state_dir / name).unlink(missing_ok=True)
        try:
            state_dir.rmdir()
        except OSError:
            return
    for directory in (outdir, *outdir.parents):
        try:
            directory.rmdir()
        except OSError:
            return
        if directory == created:
            return
