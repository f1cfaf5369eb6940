"""Text fields of the TSV files esmfold-lite writes (``summary.tsv``, ``manifest.tsv``): one rule keeps any text one
field on one line, and reading undoes it exactly.

The rule is the "linear TSV" convention (backslash escapes, no quoting), extended to every control character: a
backslash is written ``\\\\``, a tab ``\\t``, a line feed ``\\n``, a carriage return ``\\r``, NUL ``\\0``; the other C0
controls (U+0001-U+001F), DEL and the C1 controls (U+007F-U+009F) as ``\\xNN`` (two lower-case hex digits), and the
Unicode line and paragraph separators as ``\\u2028`` and ``\\u2029``. Everything else, quotes and non-ASCII letters
included, is written as it is (UTF-8). So a field never holds a tab or a line break, and ``unescape_field`` gives back
the text that was written; a backslash not followed by one of these escapes (a hand-edited file) is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}
_UNSHORT = {escape[1]: char for char, escape in _SHORT.items()}
_TO_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPED = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u(202[89])|(.))", re.DOTALL)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _unescape(match: re.Match[str]) -> str:
    code, separator, char = match.groups()
    if code is not None or separator is not None:
        return chr(int(code or separator, 16))
    return _UNSHORT.get(char, match.group())


def escape_field(text: str) -> str:
    """``text`` as one TSV field by the module's rule: no tab, no line break, reversible."""
    return _TO_ESCAPE.sub(_escape, text)


def unescape_field(field: str) -> str:
    """The text an ``escape_field`` field stands for."""
    return _ESCAPED.sub(_unescape, field) if "\\" in field else field


def tsv_line(fields: Iterable[object]) -> str:
    """One TSV line (with its ``\\n``) of ``fields``, each ``str()``-ed and escaped (``escape_field``)."""
    return "\t".join(escape_field(str(field)) for field in fields) + "\n"
