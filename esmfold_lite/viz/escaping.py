"""Untrusted text in the report and the notebook views: FASTA ids, error messages, file names, structure files.

``escape_html`` is the one way data enters HTML (element text and quoted attribute values); ``escape_script`` the one
way it enters a ``<script>`` element (as JSON, or JavaScript whose ``<`` can only be inside string literals). Unicode
bidi controls are written as visible marks (``[U+202E]``), so that no id can reorder what is displayed (as
"abc\\u202efdp.exe" would show as "abcexe.pdf").
"""

from __future__ import annotations

import html
import re

BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")  # ALM, LRM, RLM, embeddings, isolates


def show_bidi_controls(text: str) -> str:
    """``text`` with each Unicode bidi control replaced by a visible mark: U+202E (RLO) becomes "[U+202E]"."""
    return BIDI_CONTROLS.sub(lambda match: f"[U+{ord(match.group()):04X}]", text)


def escape_html(value: object) -> str:
    """``str(value)`` for HTML element text or a quoted attribute value: ``& < > " '`` escaped, bidi controls shown."""
    return html.escape(show_bidi_controls(str(value)), quote=True)


def escape_script(code: str) -> str:
    """JSON (or JavaScript with ``<`` only inside string literals) made safe as the text of a ``<script>`` element.

    Every ``<`` is written ``\\u003c``, so no ``</script>`` or ``<!--`` in the data can end or alter the element;
    U+2028 and U+2029 are escaped too (older JavaScript takes them for line breaks inside strings).
    """
    return code.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
