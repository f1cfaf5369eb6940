"""An output directory's lock: one esmfold-lite run per OUTDIR at a time, shared by the folding runs (taken with
their run state, ``run_state``) and ``embed`` (its sinks). ``outdir_lock`` creates OUTDIR if needed, holds its lock for
the run and, when the run produced nothing, removes what it created.

It lives in ``OUTDIR/.esmfold-lite/``:

- ``lock``: held for the whole run with ``filelock`` (an OS lock, ``flock``), so a second run on the same OUTDIR
  stops at once, while a lock left by a killed run (even SIGKILL) is free again: the OS drops it with the process.
  Temporary files of interrupted writes are deleted only while the lock is held, never another live run's.
- ``owner.json``: pid, host and start time of the run holding the lock, for the busy message.

Broken state: ``owner.json`` is only shown in the busy message and is rewritten by every run, so whatever it holds
does not matter; ``lock`` is only ever locked, never read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from esmfold_lite.io.atomic import atomic_write_text, remove_stale_temp_files, write_failure

logger = logging.getLogger(__name__)

STATE_DIR = ".esmfold-lite"


class OutdirError(Exception):
    """The output directory cannot be used: busy with another run, not a directory, not writable, a planted link,
    its run state damaged, the disk full."""


def _first_missing_ancestor(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (what ``mkdir -p`` will create), or None."""
    missing = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing


@dataclass
class LockedOutdir:
    """OUTDIR while its lock is held: ``path`` (resolved), ``created`` (the outermost directory this run made, or
    None); the run sets ``produced`` once it has written a result, which keeps what it created."""

    path: Path
    created: Path | None
    produced: bool = False


@contextlib.contextmanager
def outdir_lock(outdir: str | os.PathLike) -> Iterator[LockedOutdir]:
    """Create ``outdir`` (and parents) if needed and hold its lock for the ``with`` block; yields a
    :class:`LockedOutdir`. Once the lock is held, temporary files of interrupted writes are deleted.

    Raises OutdirError when OUTDIR is a file or cannot be written, or another esmfold-lite run holds it. If this call
    created OUTDIR and the block ends (in any way) without ``produced`` set, what it created is removed, leaving
    nothing (``_remove_created``: only the lock's files and directories left empty)."""
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
    locked = LockedOutdir(outdir.resolve(), created.resolve() if created is not None else None)
    state_dir = _checked_state_dir(locked.path)
    lock = _take_lock(state_dir, locked.path, locked.created)
    try:
        _claim(state_dir, locked.path)
        yield locked
    finally:
        try:
            if locked.created is not None and not locked.produced:
                _remove_created(locked.path, locked.created)
        finally:
            lock.release()


def _checked_state_dir(outdir: Path) -> Path:
    state_dir = outdir / STATE_DIR
    if state_dir.is_symlink() or (state_dir.exists() and not state_dir.is_dir()):
        raise OutdirError(f"{state_dir} is not a directory (esmfold-lite keeps its run state there): remove it")
    return state_dir


def _take_lock(state_dir: Path, outdir: Path, created: Path | None) -> FileLock:
    """Create the state directory and take OUTDIR's lock (OutdirError if busy or impossible); the lock held."""
    lock = FileLock(state_dir / "lock", timeout=0)
    try:
        state_dir.mkdir(exist_ok=True)
        lock.acquire()
    except Timeout:
        raise OutdirError(f"output directory {outdir} is in use by another esmfold-lite run{_owner(state_dir)}; "
                          "wait for it to finish, or write to another output directory") from None  # fmt: skip
    except OSError as exc:  # a full disk, a directory where the lock file goes
        if created is not None:
            _remove_created(outdir, created)
        raise OutdirError(f"cannot lock {lock.lock_file}: {exc.strerror or exc}") from exc
    return lock


def _claim(state_dir: Path, outdir: Path) -> None:
    """With the lock held: record this run in ``owner.json`` (for the busy message of a second run) and delete the
    temporary files of interrupted writes."""
    owner = state_dir / "owner.json"
    try:
        atomic_write_text(
            owner, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n"
        )
        for directory in (outdir, state_dir):
            for path in remove_stale_temp_files(directory):
                logger.info("removed %s, left by an interrupted run", path.name)
    except OSError as exc:
        raise OutdirError(write_failure(exc.filename or owner, exc)) from exc


def _owner(state_dir: Path) -> str:
    try:
        owner = json.loads((state_dir / "owner.json").read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        return f" (pid {owner['pid']} on {owner['host']}, started {started})"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # a damaged owner.json only loses the details
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
