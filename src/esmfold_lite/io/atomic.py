"""Atomic file writes: a reader sees the old file or the complete new one, never a truncated one.

Data goes to a temporary file in the target's directory (same file system, so the rename is atomic), is flushed to
disk with ``fsync``, and then renamed over the target with ``os.replace``; the directory is synced as well so the
rename itself survives a power loss. On an exception the temporary file is removed. A process killed with SIGKILL
can still leave a temporary file behind; its name marks it (``.<name>.<12 hex>.tmp<suffix>``) and
`remove_stale_temp_files` deletes such leftovers.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[^.]*)?$")


def _create_temp(path: Path) -> Path:
    """An empty new file beside `path`, created with the usual permissions (0o666 minus the umask)."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue


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
    ``with`` block the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    temp = _create_temp(path)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


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
    call it only when no other process can be writing there (``io.run_state`` holds the output directory's lock
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
