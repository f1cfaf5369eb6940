"""benchmarks/README.md's result sections: each benchmark script owns the lines between its two markers,
``<!-- NAME-results:start -->`` and ``<!-- NAME-results:end -->``, and rewrites them from its results."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def write_section(name: str, lines: list[str]) -> None:
    """Put ``lines`` between the markers of section ``name`` (added at the end of the README if it has none)."""
    start, end = f"<!-- {name}-results:start -->", f"<!-- {name}-results:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    body = "\n".join(lines)
    if start in text and end in text:
        head, _, rest = text.partition(start)
        text = f"{head}{start}\n{body}\n{end}{rest.partition(end)[2]}"
    else:
        text += f"\n{start}\n{body}\n{end}\n"
    README.write_text(text)
