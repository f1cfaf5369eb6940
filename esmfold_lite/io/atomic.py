"""Atomic file writes: a reader sees the old file or the complete new one, never a truncated one.

Data goes to a temporary file in the target's directory (same file system, so the rename is atomic), is flushed to
disk with ``fsync``, and then renamed over the target with ``os.replace``; the directory is synced as well so the
rename itself survives a power loss. On an exception the temporary file is removed. A process killed with SIGKILL
can still leave a temporary file behind; its name marks it (``.<name>.<12 hex>.tmp<suffix>``) and
`remove_stale_temp_files` deletes such leftovers.

A failed write (a full disk shows up as ``ENOSPC`` from ``write`` or ``fsync``, a failing one as ``EIO``) raises
the OSError with ``filename`` set to the file meant rather than its temporary name; `write_failure` words it for
the user and `is_disk_error` tells a failure of the file system (no write anywhere can succeed) from one of a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[^.]*)?$")
# errors of the file system rather than of one file: a run that gets one cannot write anything else either
_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EIO: "the write failed",
    errno.EROFS: "the file system is read-only",
}
if hasattr(errno, "EDQUOT"):  # not on every platform
    _DISK_ERRORS[errno.EDQUOT] = "the disk quota is used up"


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the file system (full, over quota, failing, read-only), not of one file."""
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRORS


def write_failure(path: str | os.PathLike | None, exc: OSError) -> str:
    """One line for a failed write of ``path``: ``cannot write PATH: the disk is full (No space left on device)``."""
    detail = exc.strerror or str(exc)
    reason = _DISK_ERRORS.get(exc.errno)
    return f"cannot write {path}: {f'{reason} ({detail})' if reason else detail}"


def _create_temp(path: Path) -> Path:
    """An empty new file beside `path`, created with the usual permissions (0o666 minus the umask)."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue
        except OSError as exc:
            _name_target(exc, temp, path)
            raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support syncing a directory
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` atomically.

    For libraries that write files themselves: the temporary name ends with the target's suffix, so
    ``np.savez`` does not append ``.npz`` and ``savefig`` picks the format from it. On an exception in the
    ``with`` block the temporary file is removed and `path` is left untouched; an OSError that names no file or
    the temporary one is made to name `path`.
    """
    path = Path(path)
    temp = _create_temp(path)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # a disk that fails this too: the next run's lock holder removes it
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _name_target(exc, temp, path)
        raise
    _fsync_directory(path.parent)


def _name_target(exc: OSError, temp: Path, path: Path) -> None:
    """Let ``exc`` name ``path``, the file meant, when it names no file (``write``, ``fsync``) or only ``temp``."""
    named = exc.filename
    if exc.errno is None or exc.filename2 is not None:  # os.replace names both files already
        return
    if named is None or (isinstance(named, (str, os.PathLike)) and os.fspath(named) == os.fspath(temp)):
        exc.filename = str(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically, exactly as given (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temp_files(directory: str | os.PathLike, min_age_s: float = 0.0) -> list[Path]:
    """Delete temporary files that `atomic_path` left in `directory` (not recursive) when a process was killed.

    Only names of the form ``.<name>.<12 hex>.tmp<suffix>`` untouched for at least `min_age_s` seconds are removed;
    call it only when no other process can be writing there (``pipeline.outdir_lock`` holds the output directory's lock
    while it does). Returns the removed paths.
    """
    removed = []
    now = time.time()
    for entry in os.scandir(directory):
        if not (_TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return removed
