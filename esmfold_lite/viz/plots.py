"""Confidence plots: pLDDT per residue and the PAE matrix, with chain boundaries marked.

One drawing code path for every place that plots: ``viz.plot_plddt`` / ``viz.plot_pae`` (notebook figures), the PNG
that ``predict --formats png`` writes and the images of the HTML report. The drawing functions take plain arrays,
so plots can be made from a ``Prediction`` or from the files of a finished run.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import numpy as np

from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.io.structure import CHAIN_IDS, load_structure
from esmfold_lite.viz.colors import PLDDT_BANDS
from esmfold_lite.viz.view import chain_numbers, is_prediction, residue_plddt

if TYPE_CHECKING:  # matplotlib is imported when a plot is made, not with the package (the CLI starts faster)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from esmfold_lite.prediction import Prediction  # annotations only: prediction imports viz (its notebook display)

PAE_MAX = 30.0  # Å, top of the PAE colour scale (larger values get the top colour)
PAE_CMAP = "Greens_r"


def chain_starts(chain_index) -> np.ndarray:
    """(L,) chain number per residue → 0-based indices where a new chain starts (the first residue excluded)."""
    chain_index = np.asarray(chain_index)
    return np.nonzero(np.diff(chain_index))[0] + 1


def draw_plddt(ax: Axes, plddt, chain_index=None, mean_plddt: float | None = None) -> None:
    """pLDDT (L,) per residue as a line over the AlphaFold DB confidence bands; chains separated by dashed lines."""
    plddt = np.asarray(plddt, dtype=float)
    residues = np.arange(1, len(plddt) + 1)
    for band in PLDDT_BANDS:
        ax.axhspan(band.low, band.high, color=band.color, alpha=0.15, linewidth=0)
    ax.plot(residues, plddt, color="black", linewidth=1)
    mean = float(plddt.mean()) if mean_plddt is None and len(plddt) else mean_plddt
    ax.set(xlim=(1, max(len(plddt), 2)), ylim=(0, 100), xlabel="residue", ylabel="pLDDT",
           title="pLDDT" if mean is None else f"pLDDT (mean {mean:.1f})")  # fmt: skip
    if chain_index is not None:
        starts = chain_starts(chain_index)
        for start in starts:
            ax.axvline(start + 0.5, color="grey", linestyle="--", linewidth=0.8)
        if len(starts):
            edges = np.concatenate([[0], starts, [len(plddt)]])
            for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
                ax.text((a + b + 1) / 2, 97, CHAIN_IDS[k % len(CHAIN_IDS)], ha="center", va="top", fontsize=9)


def draw_pae(ax: Axes, pae, chain_index=None, ptm: float | None = None, cax: Axes | None = None):
    """PAE (L, L) in Å, row i = residues aligned on residue i, on a 0–30 Å scale with a colour bar (in ``cax``, or
    taken from ``ax``'s space); chains separated by lines. Returns the image."""
    pae = np.asarray(pae, dtype=float)
    n = len(pae)
    image = ax.imshow(pae, cmap=PAE_CMAP, vmin=0, vmax=PAE_MAX, interpolation="nearest",
                      extent=(0.5, n + 0.5, n + 0.5, 0.5))  # fmt: skip
    ax.set(xlabel="scored residue", ylabel="aligned residue", title="PAE" if ptm is None else f"PAE (pTM {ptm:.3f})")
    extend = "max" if n and float(pae.max()) > PAE_MAX else "neither"
    placement = {"cax": cax} if cax is not None else {"ax": ax}
    ax.figure.colorbar(image, **placement, label="expected position error (Å)", extend=extend)
    if chain_index is not None:
        for start in chain_starts(chain_index):
            ax.axvline(start + 0.5, color="black", linewidth=0.8)
            ax.axhline(start + 0.5, color="black", linewidth=0.8)
    return image


def _axes_at(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Axes at a position given in inches from the figure's lower left corner."""
    w, h = fig.get_size_inches()
    return fig.add_axes((left / w, bottom / h, width / w, height / h))


def confidence_figure(
    plddt,
    pae=None,
    chain_index=None,
    mean_plddt: float | None = None,
    ptm: float | None = None,
    title: str = "",
    size: tuple[float, float] = (11, 4.5),
    dpi: float = 100,
) -> Figure:
    """pLDDT (left) and a square PAE panel with its colour bar (right; left out when ``pae`` is None), drawn without
    pyplot (Agg). Margins are fixed in inches rather than fitted (``tight_layout`` would double the drawing time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    width, height = size
    left, bottom, right, top = 0.65, 0.5, 0.2, 0.3 + (0.3 if title else 0.0)
    panel = height - bottom - top
    plddt_width = width - left - right
    if pae is not None:
        gap, bar, bar_gap, bar_labels = 0.85, 0.12, 0.1, 0.72
        plddt_width -= gap + panel + bar_gap + bar + bar_labels - right
        pae_left = left + plddt_width + gap
        draw_pae(_axes_at(fig, pae_left, bottom, panel, panel), pae, chain_index, ptm,
                 cax=_axes_at(fig, pae_left + panel + bar_gap, bottom, bar, panel))  # fmt: skip
    draw_plddt(_axes_at(fig, left, bottom, plddt_width, panel), plddt, chain_index, mean_plddt)
    if title:
        fig.suptitle(title)
    return fig


def figure_png(fig: Figure, colors: int | None = None) -> bytes:
    """The figure as PNG bytes, at its own size and dpi; ``colors``: reduce to a palette of that many colours
    (an adaptive palette; 256 keeps plots looking the same at about a third of the size)."""
    buffer = io.BytesIO()
    if colors is None:
        fig.savefig(buffer, format="png")
    else:
        from PIL import Image

        fig.canvas.draw()
        image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
        image.quantize(colors, method=Image.Quantize.MEDIANCUT).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def confidence_png(one: Prediction, title: str) -> bytes:
    """Two panels as PNG bytes of a single-sequence prediction (``Prediction.select`` output): pLDDT per residue
    (left) and the PAE matrix (right); chain boundaries are marked. Drawn with the Agg canvas (no pyplot state, no
    display needed): ``predict --formats png`` writes it."""
    data = _arrays(one)
    figure = confidence_figure(
        data["plddt"], data["pae"], data["chain_index"], mean_plddt=data["mean_plddt"], ptm=data["ptm"], title=title
    )
    return figure_png(figure)


def contact_map_png(contacts, title: str) -> bytes:
    """A predicted contact map ``(L, L)`` (probabilities, tensor or array) as PNG bytes, residues numbered from 1.

    Same rendering as ``confidence_png``: matplotlib's object API on the Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if hasattr(contacts, "detach"):
        contacts = contacts.detach().float().cpu().numpy()
    probabilities = np.asarray(contacts, dtype=np.float32)
    length = probabilities.shape[0]
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots()
    extent = (0.5, length + 0.5, length + 0.5, 0.5)
    image = axes.imshow(probabilities, cmap="Blues", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    axes.set(xlabel="residue", ylabel="residue", title=title)
    fig.colorbar(image, ax=axes, label="contact probability")
    fig.tight_layout()
    return figure_png(fig)


def _notebook_figure(size: tuple[float, float]) -> Figure:
    """A pyplot figure that Jupyter shows once, as the value of a cell (closed, so the inline backend does not show
    it a second time at the end of the cell); ``savefig`` works as usual."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size)
    plt.close(fig)
    return fig


def _arrays(one: Prediction) -> dict:
    """The confidence arrays of a single-sequence prediction (``Prediction.select`` output) as numpy."""
    return {
        "plddt": one.plddt[0].detach().float().cpu().numpy(),
        "pae": one.pae[0].detach().float().cpu().numpy(),
        "chain_index": one.chain_index[0].cpu().numpy(),
        "mean_plddt": float(one.mean_plddt[0]),
        "ptm": float(one.ptm[0]),
    }


def plot_plddt(pred: Prediction | str | os.PathLike, i: int = 0, size: tuple[float, float] = (7, 3.5)) -> Figure:
    """pLDDT per residue over the AlphaFold DB confidence bands, chain boundaries dashed: of sequence ``i`` of a
    Prediction (its mean pLDDT in the title), or read from a structure file ``predict`` wrote (PDB or mmCIF, pLDDT
    in the B-factors; ``i`` is not used)."""
    if is_prediction(pred):
        data = _arrays(pred.select(i))
        plddt, chain_index, mean = data["plddt"], data["chain_index"], data["mean_plddt"]
    else:
        chains, _, plddt = residue_plddt(load_structure(pred, extra_fields=("b_factor",)))
        chain_index, mean = chain_numbers(chains), None
    fig = _notebook_figure(size)
    draw_plddt(fig.subplots(), plddt, chain_index, mean)
    fig.tight_layout()
    return fig


def plot_pae(pred: Prediction | str | os.PathLike, i: int = 0, size: tuple[float, float] = (5.5, 4.5)) -> Figure:
    """PAE matrix (Å) on a 0–30 Å scale with a colour bar: of sequence ``i`` of a Prediction (chain boundaries as
    lines, pTM in the title), or read from an AlphaFold DB PAE JSON file (``predict --formats pae`` writes
    ``<id>_predicted_aligned_error_v1.json``; it holds no chains, and ``i`` is not used)."""
    if is_prediction(pred):
        data = _arrays(pred.select(i))
        pae, chain_index, ptm = data["pae"], data["chain_index"], data["ptm"]
    else:
        pae, chain_index, ptm = read_afdb_pae(pred), None, None
    fig = _notebook_figure(size)
    draw_pae(fig.subplots(), pae, chain_index, ptm)
    fig.tight_layout()
    return fig
