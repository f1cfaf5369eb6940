"""``summary.tsv``: one row per protein of a folding run (``SUMMARY_COLUMNS``), tab-separated with a header; text
fields escaped by ``io.tsv``'s rule, so every row is one line."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from esmfold_lite.io.atomic import atomic_path
from esmfold_lite.io.tsv import escape_field, unescape_field

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "id", "length", "mean_plddt", "ptm", "status", "seconds", "error", "notes", "sequence_hash", "header",
)  # fmt: skip


def _tsv_field(value: object) -> str:
    """A value as one TSV field: None, NaN and ±inf → empty, floats rounded, text escaped (``io.tsv``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        value = f"{value:.4f}".rstrip("0")
        value += "0" if value.endswith(".") else ""
    return escape_field(str(value))


def write_summary(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    """Write ``rows`` (dicts keyed by ``SUMMARY_COLUMNS``) as a tab-separated table with a header, atomically; text
    such as a FASTA header is escaped by ``io.tsv``'s rule, so every row is one line of ``SUMMARY_COLUMNS`` fields.

    Rows are streamed to the file, so millions of them never sit in memory as text."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(SUMMARY_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(_tsv_field(row.get(column)) for column in SUMMARY_COLUMNS) + "\n")


def read_summary(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``summary.tsv`` (missing columns read as "", fields unescaped: ``io.tsv``); [] if the file
    does not exist.

    Rows without an id are skipped with a warning, so a hand-edited or foreign file does not stop a reader.
    """
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row.get("id"):
                logger.warning("%s line %d has no id; ignored", path, line)
                continue
            rows.append({column: unescape_field(row.get(column) or "") for column in SUMMARY_COLUMNS})
    return rows
