"""Where an embedding run (``pipeline.embedding``, ``esmfold-lite embed``) puts its results: the two sinks that its
loop hands every input (``EmbedInput``) to, embedded, skipped or done before, and the helpers that write their files.

- ``FileSink``: one file per input (``pt``/``npz``, fair-esm's layout) and ``manifest.tsv``, written at the end.
- ``ShardSink``: resumable safetensors shards with an index (``pipeline.embedding_shards``) and ``manifest.tsv``,
  written as inputs are settled, in input order.

Both hold OUTDIR's lock (``pipeline.outdir_lock``) for the run, which also deletes the temporary files a killed run
left; a run that wrote nothing leaves no OUTDIR it created.

Every file is written atomically; a file that cannot be written (a full or failing disk, an unwritable OUTDIR) stops
the run with a one-line PipelineError naming it (the command's exit status 1), leaving no partial file, and no
manifest is written for that run (an earlier run's manifest stays as it was). Sharded runs keep every shard committed
before the stop, and the same run resumes from there; an interrupted sharded run (Ctrl-C, SIGTERM) writes the shard
in progress and the manifest of what was settled.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from esmfold_lite.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, is_disk_error, write_failure
from esmfold_lite.io.fasta import iter_unique_ids, resolve_inside
from esmfold_lite.io.msa import MSA
from esmfold_lite.io.output_names import CONTACTS_PNG_SUFFIX
from esmfold_lite.io.tsv import tsv_line
from esmfold_lite.pipeline.embedding_shards import INDEX_NAME, SHARD_DIR, ShardWriter
from esmfold_lite.pipeline.errors import PipelineError
from esmfold_lite.pipeline.outdir_lock import LockedOutdir, OutdirError, outdir_lock
from esmfold_lite.pipeline.sqlite_errors import remove_database
from esmfold_lite.viz.plots import contact_map_png

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "file", "length", "status")


@dataclass
class EmbedInput:
    """One thing to embed: a FASTA record (``msa`` None) or an MSA file's alignment; ``problem`` if it cannot be."""

    id: str
    sequence: str
    length: int
    where: str
    problem: str | None = None
    msa: MSA | None = None
    name: str = ""  # its file (stem) or, once embedded before, its shard
    done: bool = False  # embedded by an earlier run (sharded output)


def _locked_outdir(stack: contextlib.ExitStack, outdir: Path) -> LockedOutdir:
    """Create ``outdir`` if needed and take its lock (``pipeline.outdir_lock``, which deletes the temporary files of
    killed runs and, if the run produced nothing, removes what it created) until ``stack`` closes; PipelineError if it
    cannot be used."""
    try:
        return stack.enter_context(outdir_lock(outdir))
    except OutdirError as exc:
        raise PipelineError(str(exc)) from exc


class FileSink:
    """One ``.pt``/``.npz`` file per input (fair-esm ``extract.py``'s layout), named by its id made safe
    (duplicates get ``_2``, ``_3``), plus ``manifest.tsv`` in input order, written at the end. A run that writes
    nothing leaves no OUTDIR it created. ``contacts_png``: also draw each contact map (``result["contacts"]``) as
    ``<name>.contacts.png``; ``contacts``: keep the map in the file."""

    def __init__(self, outdir: Path, file_format: str, contacts: bool, contacts_png: bool):
        self.outdir = outdir
        self.file_format, self.contacts, self.contacts_png = file_format, contacts, contacts_png
        self.manifest: list[tuple[str, str, int, str]] = []
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> FileSink:
        self.locked = _locked_outdir(self.stack, self.outdir)
        self.outdir = self.locked.path
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        with self.stack:
            if kind is None and self.locked.produced:  # an input written
                with _writing(self.outdir / "manifest.tsv"):
                    write_manifest(self.outdir / "manifest.tsv", self.manifest)

    def classify(self, inputs: Iterable[EmbedInput]) -> Iterator[EmbedInput]:
        """The inputs, each given its file name stem as it streams past."""
        current: list[EmbedInput] = []

        def ids() -> Iterator[str]:
            for item in inputs:
                current[:] = [item]
                yield item.id

        for name in iter_unique_ids(ids()):
            current[0].name = name
            yield current[0]

    def skipped(self, item: EmbedInput) -> None:
        self.manifest.append((item.id, "", item.length, f"skipped: {item.problem}"))

    def done(self, item: EmbedInput) -> None:  # never: every run writes every file anew
        raise AssertionError(item)

    def write(self, item: EmbedInput, result: dict) -> None:
        filename = f"{item.name}.{self.file_format}"
        with _writing(self.outdir / filename):
            if self.contacts_png:
                png = resolve_inside(self.outdir, item.name + CONTACTS_PNG_SUFFIX)
                atomic_write_bytes(png, contact_map_png(result["contacts"], item.id))
            if not self.contacts:
                result.pop("contacts", None)
            write_result(self.outdir / filename, item, result, self.file_format)
        self.manifest.append((item.id, filename, item.length, "ok"))
        self.locked.produced = True


class ShardSink:
    """safetensors shards and their index (``pipeline.embedding_shards``), resumable: inputs the index holds with the
    same sequence are not embedded again; a repeated id is skipped (ids name the embeddings), as is a known id with
    another sequence. ``manifest.tsv`` lists every input in input order, each once it is settled (written at the end,
    atomically). ``settings``: what makes the numbers (``pipeline.embedding.embed_settings``), kept in the index; a
    shard is written once ``shard_bytes`` of arrays wait for it; ``overwrite``: start a new index; ``contacts``: keep
    the contact maps."""

    def __init__(self, outdir: Path, settings: dict[str, object], shard_bytes: int, overwrite: bool, contacts: bool):
        self.outdir, self.settings, self.shard_bytes, self.overwrite = outdir, settings, shard_bytes, overwrite
        self.contacts = contacts
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> ShardSink:
        self.locked = _locked_outdir(self.stack, self.outdir)
        outdir = self.locked.path
        self.stack.callback(self._remove_index_if_unused)  # runs after the index is closed, before the lock is let go
        try:
            self.writer = ShardWriter(outdir, self.settings, self.shard_bytes, self.overwrite)
        except OutdirError as exc:
            self.stack.close()
            raise PipelineError(str(exc)) from exc
        except OSError as exc:
            self.stack.close()
            raise PipelineError(f"cannot use the output directory {outdir}: {exc.strerror or exc}") from exc
        self.stack.callback(self.writer.close)
        with _writing(outdir / "manifest.tsv"):
            temp = self.stack.enter_context(atomic_path(outdir / "manifest.tsv"))
            self.manifest_file = self.stack.enter_context(open(temp, "w", encoding="utf-8", newline=""))
        self.manifest_file.write(tsv_line(MANIFEST_COLUMNS))
        self._rows: deque[list] = deque()  # manifest rows in input order from the first one waiting for its shard
        self._waiting: dict[str, list] = {}  # id -> its row, while it waits for its shard
        return self

    def _remove_index_if_unused(self) -> None:
        """In an OUTDIR this run created, an index that got no embedding, with no manifest written, is removed, so
        that ``outdir_lock`` can remove OUTDIR too: a run that wrote nothing leaves nothing."""
        outdir = self.locked.path
        self.locked.produced = self.locked.produced or (outdir / "manifest.tsv").exists()
        if self.locked.created is not None and not self.locked.produced:
            with contextlib.suppress(OutdirError, OSError):  # what cannot be removed stays, with OUTDIR
                remove_database(outdir / INDEX_NAME)
                (outdir / SHARD_DIR).rmdir()

    def __exit__(self, kind, exc, traceback) -> None:
        try:
            interrupted = kind is not None and not issubclass(kind, Exception)  # Ctrl-C, SIGTERM
            if kind is None or interrupted:  # keep what is embedded, and list it in the manifest
                rows = self._shard_write(self.writer.flush)
                self._committed(rows)
                if interrupted:
                    log.info("interrupted: the %d sequences waiting for a shard were written", len(rows))
                    kind = exc = traceback = None  # the manifest of what was settled is written too
        except BaseException:
            self.stack.__exit__(*sys.exc_info())
            raise
        with _writing(self.outdir / "manifest.tsv"):
            self.stack.__exit__(kind, exc, traceback)

    def classify(self, inputs: Iterable[EmbedInput]) -> Iterator[EmbedInput]:
        seen: dict[str, str] = {}  # id -> where it first came in this run
        for item in inputs:
            if item.problem:
                pass
            elif item.id in seen:
                item.problem = f"duplicate id: {seen[item.id]} has the same id, and ids name the embeddings; rename one"
            else:
                seen[item.id] = item.where
                known = self.writer.embedded(item.id)
                if known is not None and known[0] != item.sequence:
                    item.problem = (
                        f"{known[1]} holds this id embedded from another sequence; rename the record, or use "
                        "--overwrite to embed everything again"
                    )
                elif known is not None:
                    item.done, item.name = True, known[1]
            yield item

    def skipped(self, item: EmbedInput) -> None:
        self._add_row([item.id, "", item.length, f"skipped: {item.problem}"])

    def done(self, item: EmbedInput) -> None:
        self._add_row([item.id, item.name, item.length, "ok"])

    def write(self, item: EmbedInput, result: dict) -> None:
        if not self.contacts:
            result.pop("contacts", None)
        self._waiting[item.id] = row = [item.id, "", item.length, None]  # ids are unique here (classify)
        self._add_row(row)
        self._committed(self._shard_write(lambda: self.writer.add(item.id, item.sequence, result, item.length)))

    def _add_row(self, row: list) -> None:
        self._rows.append(row)
        self._write_settled_rows()

    def _write_settled_rows(self) -> None:
        """Write the queued manifest rows up to the first one still waiting for its shard (input order)."""
        while self._rows and self._rows[0][3] is not None:
            self.manifest_file.write(tsv_line(self._rows.popleft()))

    def _shard_write(self, step: Callable[[], list[tuple[str, str, int]]]) -> list[tuple[str, str, int]]:
        try:
            return step()
        except OutdirError as exc:
            raise PipelineError(f"{exc}; the sequences embedded before are kept: run the same command again") from exc
        except OSError as exc:
            log.debug("writing a shard failed", exc_info=True)
            hint = "; no partial file was left: make room (or fix the disk) and run it again to resume"
            raise PipelineError(write_failure(exc.filename, exc) + (hint if is_disk_error(exc) else "")) from exc

    def _committed(self, rows: list[tuple[str, str, int]]) -> None:
        for id, shard, _ in rows:
            row = self._waiting.pop(id)
            row[1], row[3] = shard, "ok"
            self.locked.produced = True
        self._write_settled_rows()


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A block that writes ``path``: an OSError stops the run (PipelineError) with one line naming the file (the
    error's own file if it names one) and what happened."""
    try:
        yield
    except OSError as exc:
        log.debug("writing %s failed", path, exc_info=True)
        hint = "; no partial file was left: make room (or fix the disk) and run it again" if is_disk_error(exc) else ""
        raise PipelineError(write_failure(exc.filename or path, exc) + hint) from exc


def write_result(path: Path, item: EmbedInput, arrays: dict, file_format: str) -> None:
    """Write one input's result atomically: a ``torch.save`` dict, or an ``.npz`` with flat keys.

    The file is made in memory and then written, so a failed write raises the OSError (naming ``path``) rather than
    a serializer's own error."""
    buffer = io.BytesIO()
    if file_format == "pt":
        torch.save({"label": item.id, "sequence": item.sequence, **arrays}, buffer)
    else:
        flat = {"label": np.array(item.id), "sequence": np.array(item.sequence)}
        for name, value in arrays.items():
            if isinstance(value, dict):
                flat.update({f"{name}_{layer}": tensor.numpy() for layer, tensor in value.items()})
            else:
                flat[name] = value.numpy()
        np.savez(buffer, **flat)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(path: Path, rows: list[tuple[str, str, int, str]]) -> None:
    """``id file length status`` per input, tab-separated (text escaped by ``io.tsv``'s rule), in input order."""
    atomic_write_text(path, "".join(tsv_line(row) for row in (MANIFEST_COLUMNS, *rows)))
