"""Sharded embeddings: safetensors shards plus an SQLite index ``id -> (shard, row, offset)``, written by
``esmfold-lite embed --format safetensors`` and read back one id at a time.

Layout of OUTDIR::

    index.sqlite                           settings (what produced the numbers) and one row per embedded id
    shards/shard-000000.safetensors ...    the arrays

A shard holds the ``n`` sequences it was given (rows ``0..n-1``), ``R`` residues in all:

    representations.<layer>        (R, D)          per-residue vectors, the sequences concatenated in row order
    mean_representations.<layer>   (n, D)
    bos_representations.<layer>    (n, D)          the <cls> vector
                                                   (each of these three only when ``--include`` names it)
    logits                         (R, V)          with --logits
    contacts                       (sum L_i**2,)   each L_i x L_i map flattened, with --contacts
    msa_depth                      (n,)            MSA Transformer: rows used

and the metadata ``{"format": FORMAT, "ids": JSON list of the ids by row}``, so a shard describes itself. Layers
are absolute layer numbers, as in fair-esm's ``extract.py``. A sequence's residues are rows
``offset .. offset + length`` of the per-residue tensors, its contact map ``contact_offset .. + length**2``.

Crash safety: a shard is written atomically (temporary file, fsync, rename), then its rows are committed to the
index in one transaction; a sequence counts as embedded only once its row is committed. A kill between the two
leaves a shard no row names: the next run (holding OUTDIR's lock) deletes it. The index also records each id's
sequence, so a later run knows which inputs are done, and that one with a known id but another sequence is not.
A kill in the middle of a commit leaves ``index.sqlite-journal`` (a hot journal) that only a writer can roll back:
the reader does so when it may write OUTDIR, else it says to run the same command again, which recovers it.
A damaged index is refused with its fix (``DAMAGED_INDEX_FIX``), an empty one (0 bytes, no tables) too: a run creates
the index with its tables in one atomic step, and taken for a new one it would have its shards deleted as orphans.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from esmfold_lite.io.atomic import atomic_write_bytes
from esmfold_lite.io.output_names import DEFAULT_INCLUDE
from esmfold_lite.pipeline.outdir_lock import OutdirError
from esmfold_lite.pipeline.run_state import settings_differences
from esmfold_lite.pipeline.sqlite_errors import checked_connection, database_errors, hot_journal, remove_database

log = logging.getLogger(__name__)

FORMAT = "esmfold-lite-embeddings/1"
INDEX_NAME = "index.sqlite"
SHARD_DIR = "shards"
DAMAGED_INDEX_FIX = "which sequences are embedded is lost: run again with --overwrite, or use a new output directory"
_SHARD_NAME = re.compile(r"shard-(\d{6})\.safetensors")
_SCHEMA = """
CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);
CREATE TABLE embeddings (
    id TEXT PRIMARY KEY, sequence TEXT NOT NULL, length INTEGER NOT NULL, shard TEXT NOT NULL,
    row INTEGER NOT NULL, offset INTEGER NOT NULL, contact_offset INTEGER
);
"""
_COLUMNS = {"settings": ("id", "json"), "embeddings": ("id", "sequence", "length", "shard", "row", "offset")}
_PER_SEQUENCE = ("mean_representations", "bos_representations", "msa_depth")
# what a sharded run saves each array for: a key missing from a sequence's dict names it
_SAVED_BY = {
    "representations": "--include per_tok",
    "mean_representations": "--include mean",
    "bos_representations": "--include bos",
    "contacts": "--contacts (or --include contacts)",
    "logits": "--logits",
    "msa_depth": "an MSA Transformer model",
}


class ShardWriter:
    """Appends embeddings to OUTDIR's shards and index (the caller holds OUTDIR's lock).

    Results are buffered and written as one shard once they hold ``shard_bytes`` (and by ``flush``). Opening checks
    the index against ``settings`` (a JSON-able dict: model, layers, dtype, ...): results made otherwise stop the
    run (OutdirError naming the differences) unless ``overwrite``, which deletes the index and every shard first.
    """

    def __init__(self, outdir: Path, settings: Mapping[str, object], shard_bytes: int, overwrite: bool = False):
        self.outdir = Path(outdir)
        self.index_path = self.outdir / INDEX_NAME
        self.shard_dir = self.outdir / SHARD_DIR
        self.shard_bytes = shard_bytes
        if overwrite:
            remove_database(self.index_path)
            for path in self._shard_files():
                path.unlink()
        with database_errors(self.index_path, DAMAGED_INDEX_FIX):
            self.db = checked_connection(self.index_path, _SCHEMA, _COLUMNS, "embedding index")
            stored = self.db.execute("SELECT json FROM settings").fetchone()
            if stored is None:
                with self.db:
                    self.db.execute("INSERT INTO settings VALUES (1, ?)", (json.dumps(settings, sort_keys=True),))
            elif json.loads(stored[0]) != dict(settings):
                self.db.close()
                changes = "; ".join(settings_differences(json.loads(stored[0]), settings))
                raise OutdirError(
                    f"{self.index_path} holds embeddings made with other settings ({changes}); use --overwrite to "
                    "start again with the new ones, or write to another output directory"
                )
            named = {shard for (shard,) in self.db.execute("SELECT DISTINCT shard FROM embeddings")}
        self.next_shard = 1 + max((int(_SHARD_NAME.fullmatch(Path(s).name)[1]) for s in named), default=-1)
        self._remove_orphans(named)
        self._pending: list[tuple[str, str, int, dict]] = []
        self._pending_bytes = 0

    def _shard_files(self) -> list[Path]:
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.iterdir() if _SHARD_NAME.fullmatch(p.name))

    def _remove_orphans(self, named: set[str]) -> None:
        """Delete shards no index row names (written by a run killed before it committed them)."""
        for path in self._shard_files():
            if f"{SHARD_DIR}/{path.name}" not in named:
                log.info("removing %s: a killed run wrote it but never recorded it", path)
                path.unlink()

    def embedded(self, id: str) -> tuple[str, str] | None:
        """``(sequence, shard)`` of ``id`` in the index, or None if it is not there."""
        with database_errors(self.index_path, DAMAGED_INDEX_FIX):
            return self.db.execute("SELECT sequence, shard FROM embeddings WHERE id = ?", (id,)).fetchone()

    def add(self, id: str, sequence: str, arrays: dict, length: int) -> list[tuple[str, str, int]]:
        """Buffer one sequence's arrays (``pipeline.embedding.sequence_result``'s dict; ``length``: its residues, the
        rows of its per-residue arrays, if any are saved); returns ``flush``'s rows when this call filled a shard,
        else nothing."""
        self._pending.append((id, sequence, length, arrays))
        self._pending_bytes += sum(t.nbytes for t in _tensors(arrays))
        return self.flush() if self._pending_bytes >= self.shard_bytes else []

    def flush(self) -> list[tuple[str, str, int]]:
        """Write the buffered sequences as one shard and commit their index rows; returns ``(id, shard, length)``
        of each."""
        if not self._pending:
            return []
        shard = f"{SHARD_DIR}/shard-{self.next_shard:06d}.safetensors"
        tensors, rows = _pack(self._pending, shard)
        metadata = {"format": FORMAT, "ids": json.dumps([id for id, *_ in self._pending])}
        self.shard_dir.mkdir(exist_ok=True)
        atomic_write_bytes(self.outdir / shard, safetensors_bytes(tensors, metadata))
        with database_errors(self.index_path, DAMAGED_INDEX_FIX), self.db:
            self.db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.next_shard += 1
        self._pending, self._pending_bytes = [], 0
        return [(id, shard, length) for id, _, length, shard, *_ in rows]

    def close(self) -> None:
        self.db.close()


def _tensors(arrays: dict) -> Iterator[torch.Tensor]:
    for value in arrays.values():
        yield from value.values() if isinstance(value, dict) else [value]


def _pack(pending: list[tuple[str, str, int, dict]], shard: str) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """The shard's tensors (see the module docstring) and its index rows."""
    columns: dict[str, list[torch.Tensor]] = {}
    rows = []
    offset = contact_offset = 0
    for row, (id, sequence, length, arrays) in enumerate(pending):
        for name, value in arrays.items():
            if isinstance(value, dict):
                for layer, tensor in value.items():
                    columns.setdefault(f"{name}.{layer}", []).append(tensor)
            else:
                columns.setdefault(name, []).append(value.reshape(-1) if name == "contacts" else value)
        rows.append((id, sequence, length, shard, row, offset, contact_offset if "contacts" in arrays else None))
        offset += length
        contact_offset += length * length
    tensors = {
        name: (torch.stack if name.startswith(_PER_SEQUENCE) else torch.cat)(parts).contiguous()
        for name, parts in columns.items()
    }
    return tensors, rows


class EmbeddingShards(Mapping):
    """Read-only view of a sharded ``embed`` output: ``shards[id]`` -> that sequence's dict, read without loading a
    whole shard (safetensors slices).

    The dict is shaped like a fair-esm ``extract.py`` file: ``label``, ``sequence``, ``representations``,
    ``mean_representations`` and ``bos_representations`` (``{layer: tensor}``), and ``logits`` (L x V),
    ``contacts`` (L x L) and ``msa_depth`` when the run saved them (the first three as ``--include`` asked; a key the
    run did not save raises KeyError naming the flag that saves it). ``layers`` lists the saved layers, ``include``
    the arrays ``--include`` saved.

    Opening an index that a killed run left in the middle of a commit (``index.sqlite-journal``) rolls that commit
    back when OUTDIR is writable; otherwise it raises OutdirError saying to run the same ``embed`` command again.
    """

    def __init__(self, outdir: str | os.PathLike):
        self.outdir = Path(outdir)
        path = self.outdir / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {outdir} is not an `embed --format safetensors` output")
        journal = hot_journal(path)
        # read-write only to roll back a killed run's journal (SQLite does so when the connection first reads)
        recover = journal is not None and all(os.access(p, os.W_OK) for p in (self.outdir, path, journal))
        with database_errors(path, DAMAGED_INDEX_FIX):
            try:
                self.db = checked_connection(
                    path, _SCHEMA, _COLUMNS, "embedding index", read_only=True, recover=recover
                )
            except sqlite3.OperationalError as exc:
                if journal is None or recover or "readonly" not in str(exc):
                    raise
                raise OutdirError(
                    f"{path} was left in the middle of a write by a killed run ({journal.name} is there), which only "
                    f"a process that may write {self.outdir} can undo: run the same `esmfold-lite embed` command "
                    "again (it recovers the index and resumes), or open it where the directory is writable"
                ) from exc
            self.settings = json.loads(self.db.execute("SELECT json FROM settings").fetchone()[0])
        self.layers: list[int] = list(self.settings.get("layers", []))
        self.include: list[str] = list(self.settings.get("include", DEFAULT_INCLUDE))

    def __getitem__(self, id: str) -> dict:
        row = self.db.execute(
            "SELECT sequence, length, shard, row, offset, contact_offset FROM embeddings WHERE id = ?", (id,)
        ).fetchone()
        if row is None:
            raise KeyError(id)
        sequence, length, shard, index, offset, contact_offset = row
        result = SavedEmbedding(label=id, sequence=sequence)
        with safe_open(self.outdir / shard, framework="pt") as handle:
            for name in handle.keys():
                group, _, layer = name.partition(".")
                if group in _PER_SEQUENCE:
                    value = handle.get_slice(name)[index]
                elif group == "contacts":
                    value = handle.get_slice(name)[contact_offset : contact_offset + length * length]
                    value = value.reshape(length, length)
                else:
                    value = handle.get_slice(name)[offset : offset + length]
                if layer:
                    result.setdefault(group, {})[int(layer)] = value
                else:
                    result[group] = value
        return result

    def __contains__(self, id: object) -> bool:
        return self.db.execute("SELECT 1 FROM embeddings WHERE id = ?", (id,)).fetchone() is not None

    def __iter__(self) -> Iterator[str]:
        return (id for (id,) in self.db.execute("SELECT id FROM embeddings ORDER BY shard, row"))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class SavedEmbedding(dict):
    """One sequence's arrays as ``EmbeddingShards`` gives them: a dict whose missing keys say what saves them."""

    def __missing__(self, key: object):
        if key in _SAVED_BY:
            raise KeyError(f"{key!r} was not saved by this run: it is saved with {_SAVED_BY[key]}")
        raise KeyError(key)


def open_embeddings(outdir: str | os.PathLike) -> EmbeddingShards:
    """The embeddings of an ``esmfold-lite embed --format safetensors`` run in ``outdir``, by id."""
    return EmbeddingShards(outdir)
