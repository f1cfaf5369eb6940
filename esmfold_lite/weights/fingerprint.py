"""What identifies a checkpoint, cheaply: enough to tell that an output directory's results came from other weights.

A fingerprint is a small JSON-able dict computed without reading the whole file (checkpoints are gigabytes):

- a zip file (what ``torch.save`` writes): file name, size and a digest of the zip's central directory, which holds
  the CRC-32 and size of every member, so it changes whenever any tensor does; the file's path and mtime do not
  count, so a moved or copied checkpoint keeps its fingerprint;
- any other file (safetensors, a legacy pickle): name, size and a digest of its first and last MiB;
- a folder (transformers) or an esmfold_lite ``<stem>``: the fingerprints of its files;
- a registry name or URL: the name itself (the official files do not change).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from esmfold_lite.weights import registry
from esmfold_lite.weights.download import is_url
from esmfold_lite.weights.own_format import is_own_format, own_format_stem

SAMPLE_BYTES = 1 << 20  # read from each end of a file that is not a zip


def file_fingerprint(path: str | Path) -> dict[str, object]:
    """``{"file": name, "size": bytes, "zip_crc" | "head_tail": hex digest}`` of one file (see the module doc)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                digest.update(f"{info.filename}\0{info.CRC:08x}\0{info.file_size}\n".encode())
        kind = "zip_crc"
    else:
        with open(path, "rb") as handle:
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(max(size - SAMPLE_BYTES, handle.tell()))
            digest.update(handle.read())
        kind = "head_tail"
    return {"file": path.name, "size": size, kind: digest.hexdigest()[:32]}


def checkpoint_fingerprint(source: str | Path) -> dict[str, object]:
    """Fingerprint of a checkpoint source as ``load_model`` / ``load_language_model`` accept it."""
    if is_url(source):
        return {"url": str(source)}
    path = Path(source).expanduser()
    if is_own_format(path):
        stem = own_format_stem(path)
        files = [stem.with_suffix(".json"), stem.with_suffix(".safetensors")]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:  # a registry name, or something the loader will reject with its own message
        return {"name": str(source)}
    return {"files": [file_fingerprint(f) for f in files]}


def language_model_fingerprint(source: str | Path, lm: str | Path | None) -> dict[str, object] | None:
    """Fingerprint of the ESM-2 model that ``load_model(source, lm=lm)`` may pair with a fair-esm checkpoint.

    ``lm`` when given; else the official LM file beside ``source`` (beside a symlink or beside its target), as the
    loader looks for it; None when there is none (the registry's copy, or a format that contains its LM).
    """
    if lm is not None:
        return checkpoint_fingerprint(lm)
    if is_url(source) or not Path(source).expanduser().exists():
        return None
    path = Path(source).expanduser()
    filename = registry.get(registry.get("esmfold_v1").lm).filename
    for candidate in dict.fromkeys([path.with_name(filename), path.resolve().with_name(filename)]):
        if candidate.is_file():
            return checkpoint_fingerprint(candidate)
    return None
