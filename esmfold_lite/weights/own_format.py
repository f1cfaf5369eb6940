"""esmfold_lite's own checkpoint format: ``<stem>.safetensors`` (tensors) + ``<stem>.json`` (what they are).

The json is ``{"format": "esmfold_lite", "kind": "esm2" | "esmfold", "config": {...}, "tied": {...}}``: ``config`` is
the model config dataclass as a dict, ``tied`` maps each state-dict key that shares its tensor with another key
(ESM-2's LM head and token embedding) to that key, since safetensors stores a shared tensor once. Loading needs no
pickle. A checkpoint is addressed by its stem, either file, or a folder holding ``model.safetensors`` +
``model.json``.

Writing: the ``.safetensors`` first, then the ``.json``, each atomically (``io.atomic``: a temporary file beside it,
renamed over it), so the json, which is what makes a stem a checkpoint, appears only once the tensors are complete; a
json of an earlier checkpoint at the same stem is removed before its tensors are replaced, so the two files never
describe different checkpoints. Both files get the permissions of a newly created file (0666 minus the umask):
``safetensors.torch.save_file`` writes through a temporary file of its own, created 0600.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from esmfold_lite.io.atomic import atomic_path, atomic_write_text
from esmfold_lite.weights.config_check import safetensors_shapes
from esmfold_lite.weights.safe_pickle import CheckpointError

FORMAT = "esmfold_lite"
FOLDER_STEM = "model"


def own_format_stem(path: str | Path) -> Path:
    """``x``, ``x.json`` or ``x.safetensors`` -> ``x``; a folder -> ``folder/model``."""
    path = Path(path)
    if path.is_dir():
        return path / FOLDER_STEM
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def own_format_meta(path: str | Path) -> dict[str, Any] | None:
    """The json of the checkpoint ``path`` addresses in this format (``kind``, ``config``, ``tied``), read without
    its tensors; None when it is not in this format."""
    meta = own_format_stem(path).with_suffix(".json")
    if not meta.is_file():
        return None
    try:
        content = json.loads(meta.read_text())
    except ValueError:
        return None
    return content if isinstance(content, dict) and content.get("format") == FORMAT else None


def own_format_kind(path: str | Path) -> str | None:
    """The ``kind`` of the checkpoint ``path`` addresses in this format, or None when it is not in this format."""
    meta = own_format_meta(path)
    return None if meta is None else meta.get("kind")


def is_own_format(path: str | Path) -> bool:
    """Whether ``path`` addresses a checkpoint in this format (its json says ``"format": "esmfold_lite"``)."""
    return own_format_kind(path) is not None


def save_own_format(path: str | Path, kind: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """Write ``<stem>.safetensors`` then ``<stem>.json``, each atomically (see the module docstring); returns the
    stem. Shared tensors are stored once."""
    stem = own_format_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first_key_of: dict[tuple, str] = {}
    for key, value in state.items():
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), value.shape, value.stride())
        if value.numel() and identity in first_key_of:
            tied[key] = first_key_of[identity]
            continue
        first_key_of[identity] = key
        tensors[key] = value.detach().contiguous().cpu()
    meta_path = stem.with_suffix(".json")
    with atomic_path(stem.with_suffix(".safetensors")) as temp:
        mode = temp.stat().st_mode & 0o777  # created as a new file is: 0666 minus the umask
        save_file(tensors, str(temp), metadata={"format": FORMAT, "kind": kind})
        os.chmod(temp, mode)  # save_file replaced the file with one of its own, created 0600
        meta_path.unlink(missing_ok=True)  # an earlier checkpoint's json must not describe the new tensors
    meta = {"format": FORMAT, "kind": kind, "config": config, "tied": tied}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return stem


def _tensor_file(stem: Path) -> Path:
    """The ``.safetensors`` of the checkpoint at ``stem``; CheckpointError when it is not one in this format."""
    meta_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not is_own_format(stem):
        raise CheckpointError(
            f'not an esmfold_lite checkpoint: expected {meta_path} with "format": "{FORMAT}" next to {tensor_path}'
        )
    if not tensor_path.is_file():
        raise CheckpointError(f"incomplete esmfold_lite checkpoint: {meta_path} exists but {tensor_path} is missing")
    return tensor_path


def own_format_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the checkpoint ``path`` addresses (tied keys included), from the safetensors header:
    no tensor is read."""
    stem = own_format_stem(path)
    shapes = safetensors_shapes(_tensor_file(stem))
    tied = json.loads(stem.with_suffix(".json").read_text()).get("tied", {})
    return {**shapes, **{key: shapes[source] for key, source in tied.items() if source in shapes}}


def load_own_format(path: str | Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(kind, config dict, state dict)`` of a checkpoint written by :func:`save_own_format`."""
    stem = own_format_stem(path)
    tensor_path = _tensor_file(stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    state = load_file(str(tensor_path))
    for key, source in meta.get("tied", {}).items():
        state[key] = state[source]
    return meta["kind"], meta["config"], state
