"""The tables of a deep mutational scan as ``score-variants`` reads and writes them: CSV, or TSV for ``.tsv``/``.tab``.

Reading keeps every field of every row and each row's line number in the file (for messages); writing adds the score
columns after the input's and replaces the file atomically.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from esmfold_lite.io.atomic import atomic_write_text
from esmfold_lite.io.fasta import open_text

log = logging.getLogger(__name__)


def delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_table(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each data row's line number in the file (1-based; where the row starts) of a CSV/TSV
    file. It is read as ``io.fasta.open_text`` reads text (gzip; UTF-8 with or without a byte-order mark, UTF-16 and
    UTF-32 decoded), bytes not valid in its encoding refuse the file; blank lines are skipped (their lines still
    count). Raises ValueError for a file that cannot be read or holds no header line."""
    table: list[list[str]] = []
    lines: list[int] = []
    try:
        with open_text(path, newline="", errors="strict") as handle:
            reader = csv.reader(handle, delimiter=delimiter(path))
            while True:
                start = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if row:
                    table.append(row)
                    lines.append(start)
    except UnicodeDecodeError as exc:
        encoding, first = exc.encoding.upper().removesuffix("-SIG"), exc.object[exc.start : exc.start + 1].hex()
        raise ValueError(
            f"cannot read {path}: it holds bytes that are not {encoding} text (the first is 0x{first}); save it as "
            "UTF-8, e.g. iconv -f LATIN1 -t UTF-8 IN > OUT for a Latin-1 file"
        ) from exc
    except csv.Error as exc:
        raise ValueError(f"cannot read {path} (line {reader.line_num}): {exc}") from exc
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not table:
        raise ValueError(f"{path} is empty; it needs a header line naming the mutation column")
    return table[0], table[1:], lines[1:]


def widen_header(header: list[str], rows: list[list[str]], lines: list[int]) -> list[str]:
    """``header`` with an unnamed column added for every field beyond it in the widest row, so that the output keeps
    every field of every row (the new columns go after them); the first such row is logged by its line number."""
    widest = max((len(row) for row in rows), default=0)
    if widest <= len(header):
        return header
    first = next(i for i, row in enumerate(rows) if len(row) > len(header))
    log.warning(
        "line %d has %d fields, more than the %d column names of the header line; the extra fields are kept in "
        "unnamed columns of the output", lines[first], len(rows[first]), len(header),
    )  # fmt: skip
    return header + [""] * (widest - len(header))


def write_table(path: Path, header: list[str], rows: list[list[str]], cells: dict[str, list[str]]) -> None:
    """``rows`` with the columns of ``cells`` added (a column already in ``header`` is overwritten), atomically."""
    header = list(header)
    for column in cells:
        if column in header:
            log.warning("column %r of the input is replaced by the new scores", column)
        else:
            header.append(column)
    where = {column: header.index(column) for column in cells}
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter(path), lineterminator="\n")
    writer.writerow(header)
    for i, row in enumerate(rows):
        out = row + [""] * (len(header) - len(row))
        for column, values in cells.items():
            out[where[column]] = values[i]
        writer.writerow(out)
    atomic_write_text(path, text.getvalue())
