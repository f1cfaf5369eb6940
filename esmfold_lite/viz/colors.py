"""Colours shared by the 3D views, the plots and the HTML report.

pLDDT bands are the AlphaFold Protein Structure Database's: very high (> 90), confident (70–90], low (50–70],
very low (≤ 50). Chains of a complex get the ColorBrewer "Dark2" colours, repeated after eight chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlddtBand:
    name: str
    low: float  # the band holds pLDDT > low (the lowest band also holds low itself)
    high: float
    color: str

    @property
    def label(self) -> str:
        if self.high >= 100:
            return f"{self.name} (pLDDT > {self.low:g})"
        if self.low <= 0:
            return f"{self.name} (pLDDT ≤ {self.high:g})"
        return f"{self.name} ({self.low:g} < pLDDT ≤ {self.high:g})"


PLDDT_BANDS: tuple[PlddtBand, ...] = (
    PlddtBand("Very high", 90, 100, "#0053D6"),
    PlddtBand("Confident", 70, 90, "#65CBF3"),
    PlddtBand("Low", 50, 70, "#FFDB13"),
    PlddtBand("Very low", 0, 50, "#FF7D45"),
)

CHAIN_COLORS: tuple[str, ...] = ("#1B9E77", "#D95F02", "#7570B3", "#E7298A", "#66A61E", "#E6AB02", "#A6761D", "#666666")


def plddt_band_index(plddt) -> np.ndarray:
    """(L,) pLDDT values → (L,) index into ``PLDDT_BANDS`` (0 = very high … 3 = very low)."""
    plddt = np.asarray(plddt, dtype=float)
    index = np.full(plddt.shape, len(PLDDT_BANDS) - 1)
    for i, band in reversed(list(enumerate(PLDDT_BANDS[:-1]))):
        index[plddt > band.low] = i
    return index


def chain_color(k: int) -> str:
    """Colour of the k-th chain (0-based)."""
    return CHAIN_COLORS[k % len(CHAIN_COLORS)]
