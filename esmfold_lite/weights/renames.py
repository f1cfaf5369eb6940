"""Two-way renaming of module paths between esmfold_lite's names and another format's, from one table.

A table is a sequence of ``(ours, theirs)`` pairs of module paths (a parameter key without its last part), in which
``{n}`` stands for a layer number: ``("layers.{n}.self_attn.q_proj", "encoder.layer.{n}.attention.self.query")``.
`RenameTable` applies it in either direction, so each format writes its names once (``esm2_format``: transformers
<-> ESM2; ``esmc_format``: the official ESM C file <-> ESMC).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LAYER = "{n}"
"""Stands for a layer number in a pattern."""


def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(re.escape(LAYER), r"(?P<n>\d+)") + "$")


def _rename(rules: list[tuple[re.Pattern[str], str]], module: str) -> str | None:
    for pattern, target in rules:
        if found := pattern.match(module):
            return target.replace(LAYER, found["n"]) if LAYER in target else target
    return None


class RenameTable:
    """``(ours, theirs)`` module-path patterns (``{n}``: a layer number), applied in either direction."""

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        for ours, theirs in pairs:
            if (LAYER in ours) != (LAYER in theirs):
                raise ValueError(f"{ours!r} <-> {theirs!r}: {LAYER} must be on both sides or neither")
        self.pairs = tuple(pairs)
        self._to_ours = [(_compiled(theirs), ours) for ours, theirs in self.pairs]
        self._to_theirs = [(_compiled(ours), theirs) for ours, theirs in self.pairs]

    def to_ours(self, module: str) -> str | None:
        """Their module path -> ours, or None when no pattern matches it whole."""
        return _rename(self._to_ours, module)

    def to_theirs(self, module: str) -> str | None:
        """Our module path -> theirs, or None when no pattern matches it whole."""
        return _rename(self._to_theirs, module)
