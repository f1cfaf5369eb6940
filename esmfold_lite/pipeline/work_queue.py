"""The work queue of ``fold-proteome`` on disk: every job of a run in SQLite (``OUTDIR/.esmfold-lite/queue.sqlite``),
added while the FASTA is streamed in and handed out as token-budget units longest first, so a FASTA of millions of
records is never held in memory. Every run builds it anew; the run state (``pipeline.run_state``) says what is done."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, MutableSet
from pathlib import Path

from esmfold_lite.pipeline.batching import FoldJob
from esmfold_lite.pipeline.sqlite_errors import database_errors, remove_database

QUEUE_FIX = "run the same command again: every run builds its queue anew"


def _queue_errors(path: Path) -> contextlib.AbstractContextManager[None]:
    """A block whose SQLite errors (a full or failing disk) raise OutdirError naming the queue file ``path``."""
    return database_errors(path, QUEUE_FIX)


class _TableSet(MutableSet[str]):
    """A set of strings kept in an SQLite table (the names given out, for millions of records) of the queue ``path``."""

    def __init__(self, db: sqlite3.Connection, table: str, path: Path) -> None:
        self.db, self.table, self.path = db, table, path
        with _queue_errors(path):
            db.execute(f"CREATE TABLE {table} (item TEXT PRIMARY KEY)")

    def __contains__(self, item: object) -> bool:
        with _queue_errors(self.path):
            return self.db.execute(f"SELECT 1 FROM {self.table} WHERE item = ?", (item,)).fetchone() is not None

    def __iter__(self) -> Iterator[str]:
        with _queue_errors(self.path):
            yield from (item for (item,) in self.db.execute(f"SELECT item FROM {self.table}"))

    def __len__(self) -> int:
        with _queue_errors(self.path):
            return self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def add(self, item: str) -> None:
        with _queue_errors(self.path):
            self.db.execute(f"INSERT OR IGNORE INTO {self.table} VALUES (?)", (item,))

    def discard(self, item: str) -> None:
        with _queue_errors(self.path):
            self.db.execute(f"DELETE FROM {self.table} WHERE item = ?", (item,))


class WorkQueue:
    """The jobs of one run on disk (SQLite): added while planning, handed out as units longest first.

    Every run builds its queue anew from the FASTA and the run state, so whatever is at ``path`` (the queue of a
    driver that was killed, a truncated or garbage file, stray journals) is deleted unread: it holds nothing the run
    state lacks, and rebuilding is cheaper than checking it. SQLite errors (a full or failing disk) raise OutdirError
    naming the file, never a traceback."""

    def __init__(self, path: Path) -> None:
        self.path = path
        remove_database(path)
        with _queue_errors(path):
            self.db = sqlite3.connect(path)
            self.db.execute(
                "CREATE TABLE jobs (position INTEGER PRIMARY KEY, name TEXT, header TEXT, sequence TEXT, "
                "length INTEGER, tokens INTEGER, notes TEXT)"
            )
        self.names = _TableSet(self.db, "names", path)

    def add(self, job: FoldJob) -> None:
        with _queue_errors(self.path):
            self.db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.index, job.name, job.header, job.sequence, job.length, job.tokens, json.dumps(job.notes)),
            )

    def commit(self) -> None:
        with _queue_errors(self.path):
            self.db.commit()

    def units(self, max_tokens: int) -> Iterator[list[FoldJob]]:
        """Jobs longest first, in units whose padded size (count × longest) fits ``max_tokens`` (at least one)."""
        with _queue_errors(self.path):
            self.db.execute("CREATE INDEX IF NOT EXISTS by_tokens ON jobs (tokens DESC, position)")
            unit: list[FoldJob] = []
            columns = "position, name, header, sequence, length, tokens, notes"
            query = f"SELECT {columns} FROM jobs ORDER BY tokens DESC, position"
            for *values, notes in self.db.execute(query):
                job = FoldJob(*values, notes=json.loads(notes))  # the plan's notes (a rename, unknown residues)
                if unit and (len(unit) + 1) * unit[0].tokens > max_tokens:
                    yield unit
                    unit = []
                unit.append(job)
            if unit:
                yield unit

    def close(self) -> None:
        """Close and delete the queue (it is rebuilt by every run)."""
        self.db.close()
        self.path.unlink(missing_ok=True)
