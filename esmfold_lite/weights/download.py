"""Checkpoint cache and downloads: keyed by source, resumable, verified, locked across processes, self-healing.

The cache folder is ``$ESMFOLD_LITE_HOME`` (default ``~/.cache/esmfold_lite``). An official file lives at
``<cache>/checkpoints/<file>``, torch hub's layout, so ``ESMFOLD_LITE_HOME=~/.cache/torch/hub`` reuses files fair-esm
already downloaded; a file from any other URL lives in ``<cache>/checkpoints/<host>-<12 hex of the URL's SHA-256>/``
under its own name, so two sources never share an entry.

A cached file counts as complete only when it verifiably is. A download streams into ``<file>.part`` (resumed with an
HTTP ``Range`` request, guarded by ``If-Range``, when a ``.part`` from the same URL exists) and becomes ``<file>``
only after it passed every check that applies: the registry's size and SHA-256 where known, else the length the
server announced plus a structural check of the container (see :mod:`~esmfold_lite.weights.integrity`); a transfer
whose length the server never said and whose structure is incomplete is never kept. At completion a sidecar
``<file>.download.json`` records the URL, size, SHA-256 and modification time. On every later use the cached file
must still match that record (its SHA-256 is recomputed whenever its size or modification time changed) and its
structure; a file without a record (put there by hand) must pass the structural check. A cached file that fails is
downloaded again, with a warning, and never returned. One process at a time downloads a given file: the others wait
on ``<file>.lock`` (the ``filelock`` library) and then find it complete.

Failures raise :class:`DownloadError` naming the URL and the exact path to put the file at by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from esmfold_lite.io.atomic import atomic_write_text
from esmfold_lite.progress_display import Progress
from esmfold_lite.weights import registry
from esmfold_lite.weights.integrity import structure_problem
from esmfold_lite.weights.own_format import is_own_format
from esmfold_lite.weights.registry import DEFAULT_HOME, HOME_ENV
from esmfold_lite.weights.safe_pickle import CheckpointError

CHUNK_BYTES = 1 << 20
RECORD_SUFFIX = ".download.json"
NOT_CACHED = "it is not in the cache"

log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A download failed; the message says which file to put where to work offline (also as ``url``/``dest``)."""

    def __init__(self, message: str, url: str | None = None, dest: Path | None = None) -> None:
        super().__init__(message)
        self.url, self.dest = url, dest


class ChecksumError(DownloadError):
    """A downloaded file's size, SHA-256 or structure is wrong (the file was removed)."""


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$ESMFOLD_LITE_HOME``, else ``~/.cache/esmfold_lite``."""
    return Path(override or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def checkpoint_path(filename: str, cache: str | Path | None = None) -> Path:
    """Where an official checkpoint file lives in the cache: ``<cache>/checkpoints/<filename>``."""
    return cache_dir(cache) / "checkpoints" / filename


def url_cache_path(url: str, cache: str | Path | None = None) -> Path:
    """Where the file downloaded from ``url`` is cached: an official URL at :func:`checkpoint_path` of its file name,
    any other in ``checkpoints/<host>-<12 hex of the URL's SHA-256>/<file name>``."""
    for info in registry.CHECKPOINTS.values():
        if url == info.url:
            return checkpoint_path(info.filename, cache)
        if info.regression_url and url == info.regression_url:
            return checkpoint_path(info.regression_filename, cache)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urllib.parse.urlparse(url).netloc) or "host"
    source = f"{host}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    return cache_dir(cache) / "checkpoints" / source / _filename_from_url(url)


def _filename_from_url(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise DownloadError(f"cannot tell a file name from the URL {url!r}; give a URL ending in the file name", url)
    return name


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def offline_hint(url: str, dest: Path) -> str:
    """How to place a file by hand: download it elsewhere and put it at ``dest``."""
    return f"To work offline, download it elsewhere (e.g. `curl -L -o {dest.name} {url}`) and put it at\n  {dest}"


def _sha256(path: Path, digest: Any = None) -> Any:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
    return digest


def _content_range_total(header: str | None) -> int | None:
    """Total size from ``Content-Range: bytes a-b/N`` or ``bytes */N``."""
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _read_json(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def cached_problem(dest: str | Path, url: str, size_bytes: int | None = None, sha256: str | None = None) -> str | None:
    """Why the cached ``dest`` (downloaded from ``url``) cannot be used, or ``None`` when it is verifiably complete.

    Checks the expected size/SHA-256 where given, the download record (SHA-256 recomputed when the file's size or
    modification time changed since), and the file's structure. Returns :data:`NOT_CACHED` when there is no file.
    """
    dest = Path(dest)
    if not dest.is_file():
        return NOT_CACHED
    stat = dest.stat()
    if size_bytes is not None and stat.st_size != size_bytes:
        return f"its size is {stat.st_size} bytes, expected {size_bytes}"
    record = _read_json(_record_path(dest))
    if record is not None:
        if record.get("url") != url:
            return f"it was downloaded from {record.get('url')}, not from {url}"
        if record.get("size") != stat.st_size:
            return f"its size is {stat.st_size} bytes, but {record.get('size')} were downloaded"
        if record.get("mtime_ns") != stat.st_mtime_ns:  # touched or rewritten since the download: compare contents
            if _sha256(dest).hexdigest() != record.get("sha256"):
                return "its contents changed since it was downloaded (SHA-256 differs from the download record)"
            try:
                _write_json(_record_path(dest), {**record, "mtime_ns": stat.st_mtime_ns})
            except OSError:
                pass  # a read-only cache: the hash is simply recomputed next time
        known = record.get("sha256")
    else:
        known = _sha256(dest).hexdigest() if sha256 is not None else None
    if sha256 is not None:
        return None if known == sha256.lower() else f"its SHA-256 is {known}, expected {sha256.lower()}"
    return structure_problem(dest)


def download_file(
    url: str,
    dest: str | Path,
    *,
    size_bytes: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """``dest`` once it verifiably holds the file at ``url``: the cached copy if complete, else downloaded.

    Raises:
        DownloadError: network / HTTP failure or an interrupted transfer (a ``.part`` whose length the server
            confirmed is kept for resuming).
        ChecksumError: the downloaded file has the wrong size, SHA-256 or structure (it was deleted).
    """
    dest = Path(dest)
    if cached_problem(dest, url, size_bytes, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{dest}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is downloading %s", dest)
        lock.acquire()
    try:
        problem = cached_problem(dest, url, size_bytes, sha256)  # the other process may have finished it
        if problem is None:
            return dest
        if problem != NOT_CACHED:
            log.warning("the cached %s is not usable (%s); downloading it again from %s", dest, problem, url)
        return _download(url, dest, size_bytes, sha256, progress, timeout)
    finally:
        lock.release()


def _download(
    url: str, dest: Path, size_bytes: int | None, sha256: str | None, progress: bool, timeout: float
) -> Path:
    """Stream ``url`` into ``dest.part`` (resuming it when it came from the same URL), then :func:`_finish`."""
    part = dest.with_name(dest.name + ".part")
    part_record = _read_json(_record_path(part)) or {}
    if part.is_file() and (part_record.get("url") != url or part_record.get("total") is None):
        part.unlink()  # from another URL, of unknown length, or of unknown origin: never splice onto it
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "esmfold-lite"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if part_record.get("validator"):
            headers["If-Range"] = part_record["validator"]  # the server sends the whole file if it changed
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        total = _content_range_total(exc.headers.get("Content-Range"))
        if exc.code == 416 and offset and total == offset == part_record.get("total"):
            return _finish(part, dest, url, size_bytes, sha256, total)  # the .part already holds the whole file
        if exc.code == 416 and offset:  # a stale .part: start over
            part.unlink()
            return _download(url, dest, size_bytes, sha256, progress, timeout)
        message = f"could not download {url}: HTTP {exc.code} {exc.reason}.\n{offline_hint(url, dest)}"
        raise DownloadError(message, url, dest) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason  # "Name or service not known", not "[Errno -2] ..."
        raise DownloadError(f"could not download {url}: {reason}.\n{offline_hint(url, dest)}", url, dest) from None

    with response:
        length = response.headers.get("Content-Length")
        content_range = response.headers.get("Content-Range")
        if response.status == 206 and offset:
            start = re.match(r"bytes (\d+)-", content_range or "")
            total = _content_range_total(content_range)
            if not start or int(start.group(1)) != offset or total != part_record["total"]:
                log.warning("%s answered the resume request with another range or file; starting over", url)
                part.unlink()
                response.close()
                return _download(url, dest, size_bytes, sha256, progress, timeout)
        else:
            offset = 0  # the server sent the whole file (it ignores Range, or the file changed): rewrite from the start
            total = _content_range_total(content_range) or (int(length) if length is not None else None)
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            _write_json(_record_path(part), {"url": url, "total": total, "validator": validator})
        if size_bytes is not None and total is not None and total != size_bytes:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{url} has {total} bytes, but the checkpoint has {size_bytes}; nothing was kept.\n"
                f"{offline_hint(url, dest)}",
                url,
                dest,
            )
        try:
            with (
                open(part, "ab" if offset else "wb") as out,
                Progress(total, f"downloading {dest.name}", "B", progress, log, unit_scale=True, initial=offset) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            if total is None:  # without the length a partial file cannot be resumed safely
                part.unlink(missing_ok=True)
                again = "run the same command again to retry"
            else:
                again = f"the partial file {part} is kept and running the same command again resumes it"
            message = f"download of {url} was interrupted ({exc}); {again}.\n{offline_hint(url, dest)}"
            raise DownloadError(message, url, dest) from None
    received = part.stat().st_size
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} stopped at {received} of {total} bytes; the partial file {part} is kept and "
            f"running the same command again resumes it.\n{offline_hint(url, dest)}",
            url,
            dest,
        )
    return _finish(part, dest, url, size_bytes, sha256, total)


def _finish(part: Path, dest: Path, url: str, size_bytes: int | None, sha256: str | None, total: int | None) -> Path:
    """Verify a finished ``.part`` and make it ``dest``, record first; delete it if it is wrong.

    ``total``: the length the server announced (``None`` when it did not say).
    """
    received = part.stat().st_size
    digest = _sha256(part).hexdigest()
    problem = None
    if total is not None and received != total:
        problem = f"the file is incomplete ({received} bytes where the server announced {total})"
    elif size_bytes is not None and received != size_bytes:
        problem = f"the file has {received} bytes, not the published {size_bytes}"
    elif sha256 is not None and digest != sha256.lower():
        problem = f"the file is not the published one (SHA-256 {digest}, expected {sha256.lower()})"
    elif sha256 is None and (broken := structure_problem(part, deep=True)):
        length = "" if total is not None else "the server did not say its length, and "
        problem = f"the file is not a complete checkpoint ({length}{broken})"
    if problem:
        part.unlink()
        _record_path(part).unlink(missing_ok=True)
        raise ChecksumError(
            f"downloaded {url} but {problem}; it was deleted, run again to retry.\n{offline_hint(url, dest)}",
            url,
            dest,
        )
    stat = part.stat()
    record = {
        "url": url,
        "size": received,
        "sha256": digest,
        "mtime_ns": stat.st_mtime_ns,
        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(_record_path(dest), record)  # first: a crash before the rename leaves a record the old file fails
    os.replace(part, dest)
    _record_path(part).unlink(missing_ok=True)
    return dest


def fetch(
    name_or_url: str,
    cache: str | Path | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    companions: bool = True,
) -> Path:
    """Path of a registry checkpoint or URL in the cache, downloading it first when missing or not verifiable.

    For a registry name the companion ``<name>-contact-regression.pt`` is fetched beside it too (``companions``);
    its failure only logs a warning, because the model loads without it (contacts are then meaningless).
    ESMFold's language model is a separate registry entry (``registry.get(name).lm``), fetched by the caller.
    """
    info = registry.lookup(name_or_url)
    if info is None:
        if not is_url(name_or_url):
            raise KeyError(f"unknown checkpoint name {name_or_url!r}; known names: {', '.join(registry.CHECKPOINTS)}")
        official = next((i for i in registry.CHECKPOINTS.values() if i.url == name_or_url), None)
        return download_file(
            name_or_url,
            url_cache_path(name_or_url, cache),
            size_bytes=official.size_bytes if official else None,
            sha256=official.sha256 if official else None,
            progress=progress,
            timeout=timeout,
        )
    main = download_file(
        info.url,
        url_cache_path(info.url, cache),
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        progress=progress,
        timeout=timeout,
    )
    if companions and info.regression_url:
        try:
            download_file(
                info.regression_url, url_cache_path(info.regression_url, cache), progress=progress, timeout=timeout
            )
        except DownloadError as exc:
            log.warning("contact regression weights for %s are missing (contacts will be wrong): %s", info.name, exc)
    return main


def is_cached(name: str, cache: str | Path | None = None) -> bool:
    """Whether the registry checkpoint ``name``'s main file is in the cache and verifiably complete."""
    info = registry.get(name)
    return cached_problem(url_cache_path(info.url, cache), info.url, info.size_bytes, info.sha256) is None


def locate(source: str | Path, cache: str | Path | None = None, *, progress: bool = True) -> Path:
    """An existing file or folder (or an esmfold_lite ``<stem>``) as is; a registry name or URL via :func:`fetch`.

    Raises:
        CheckpointError: ``source`` is none of these (the message lists the known names).
    """
    if is_url(source):
        return fetch(str(source), cache, progress=progress)
    path = Path(source).expanduser()
    if path.exists() or is_own_format(path):  # an own-format stem names two files, not itself a file
        return path
    if isinstance(source, str) and registry.lookup(source) is not None:
        return fetch(source, cache, progress=progress)
    raise CheckpointError(
        f"not a checkpoint: {source} is neither an existing file or folder nor a known checkpoint name "
        f"({', '.join(registry.CHECKPOINTS)})"
    )
