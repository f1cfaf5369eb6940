"""Checkpoint cache and downloads: ``<cache>/checkpoints/<file>``, resumable, verified, atomic.

The cache folder is ``$ESMFOLD_LITE_HOME`` (default ``~/.cache/esmfold_lite``). Its layout equals torch hub's, so
``ESMFOLD_LITE_HOME=~/.cache/torch/hub`` reuses files fair-esm already downloaded. A download streams into
``<file>.part``; when a ``.part`` exists it is resumed with an HTTP ``Range`` request. The finished file is checked
against the known size / SHA-256 and only then renamed to its final name, so a file in the cache is always complete.
Failures raise :class:`DownloadError` naming the URL and the exact path to put the file at by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from esmfold_lite.weights import registry
from esmfold_lite.weights.own_format import is_own_format
from esmfold_lite.weights.safe_pickle import CheckpointError

HOME_ENV = "ESMFOLD_LITE_HOME"
DEFAULT_HOME = "~/.cache/esmfold_lite"
CHUNK_BYTES = 1 << 20

log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A download failed; the message says which file to put where to work offline."""


class ChecksumError(DownloadError):
    """A downloaded file's size or SHA-256 differs from the expected one (the file was removed)."""


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$ESMFOLD_LITE_HOME``, else ``~/.cache/esmfold_lite``."""
    return Path(override or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def checkpoint_path(filename: str, cache: str | Path | None = None) -> Path:
    """Where a checkpoint file lives in the cache: ``<cache>/checkpoints/<filename>``."""
    return cache_dir(cache) / "checkpoints" / filename


def _filename_from_url(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise DownloadError(f"cannot tell a file name from the URL {url!r}; give a URL ending in the file name")
    return name


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _offline_hint(url: str, dest: Path) -> str:
    return f"To work offline, download it elsewhere (e.g. `curl -L -o {dest.name} {url}`) and put it at\n  {dest}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _content_range_total(header: str | None) -> int | None:
    """Total size from ``Content-Range: bytes a-b/N`` or ``bytes */N``."""
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def download_file(
    url: str,
    dest: str | Path,
    *,
    size_bytes: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (no-op when ``dest`` exists) via ``dest.part``, resuming a partial file.

    Raises:
        DownloadError: network / HTTP failure or an incomplete transfer (the ``.part`` is kept for resuming).
        ChecksumError: the finished file has the wrong size or SHA-256 (the ``.part`` is deleted).
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "esmfold-lite"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset and _content_range_total(exc.headers.get("Content-Range")) == offset:
            return _finish(part, dest, url, size_bytes, sha256)  # the .part already holds the whole file
        if exc.code == 416 and offset:  # a stale .part longer than the file: start over
            part.unlink()
            return download_file(url, dest, size_bytes=size_bytes, sha256=sha256, progress=progress, timeout=timeout)
        message = f"could not download {url}: HTTP {exc.code} {exc.reason}.\n{_offline_hint(url, dest)}"
        raise DownloadError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {url}: {reason}.\n{_offline_hint(url, dest)}") from None

    with response:
        if response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                part.unlink()
                raise DownloadError(f"{url} answered the resume request with a wrong range; run again to restart")
        else:
            offset = 0  # the server ignored Range: rewrite from the start
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size_bytes
        try:
            with (
                open(part, "ab" if offset else "wb") as out,
                tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download of {url} was interrupted ({exc}); the partial file {part} is kept and running the "
                f"same command again resumes it.\n{_offline_hint(url, dest)}"
            ) from None
    received = part.stat().st_size
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} stopped at {received} of {total} bytes; the partial file {part} is kept and "
            f"running the same command again resumes it.\n{_offline_hint(url, dest)}"
        )
    return _finish(part, dest, url, size_bytes, sha256)


def _finish(part: Path, dest: Path, url: str, size_bytes: int | None, sha256: str | None) -> Path:
    """Check size / SHA-256 of a complete ``.part`` and rename it to ``dest``."""
    received = part.stat().st_size
    problem = None
    if size_bytes is not None and received != size_bytes:
        problem = f"size {received} bytes, expected {size_bytes}"
    elif sha256 is not None and (actual := _sha256(part)) != sha256.lower():
        problem = f"SHA-256 {actual}, expected {sha256.lower()}"
    if problem:
        part.unlink()
        raise ChecksumError(
            f"downloaded {url} but the file is corrupt ({problem}); it was deleted, run again to retry.\n"
            f"{_offline_hint(url, dest)}"
        )
    os.replace(part, dest)
    return dest


def fetch(
    name_or_url: str,
    cache: str | Path | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    companions: bool = True,
) -> Path:
    """Path of a registry checkpoint or URL in the cache, downloading it first when missing.

    For a registry name the companion ``<name>-contact-regression.pt`` is fetched beside it too (``companions``);
    its failure only logs a warning, because the model loads without it (contacts are then meaningless).
    ESMFold's language model is a separate registry entry (``registry.get(name).lm``), fetched by the caller.
    """
    info = registry.lookup(name_or_url)
    if info is None:
        if not is_url(name_or_url):
            raise KeyError(f"unknown checkpoint name {name_or_url!r}; known names: {', '.join(registry.CHECKPOINTS)}")
        dest = checkpoint_path(_filename_from_url(name_or_url), cache)
        return download_file(name_or_url, dest, progress=progress, timeout=timeout)
    main = download_file(
        info.url,
        checkpoint_path(info.filename, cache),
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        progress=progress,
        timeout=timeout,
    )
    if companions and info.regression_url:
        try:
            download_file(
                info.regression_url,
                checkpoint_path(info.regression_filename, cache),
                progress=progress,
                timeout=timeout,
            )
        except DownloadError as exc:
            log.warning("contact regression weights for %s are missing (contacts will be wrong): %s", info.name, exc)
    return main


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
