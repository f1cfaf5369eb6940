"""3D views with py3Dmol / 3Dmol.js, coloured by pLDDT (AlphaFold DB bands), by chain, or as a rainbow N → C.

The colouring is computed here, in Python, as a list of 3Dmol viewer calls (``view_commands``): ``show`` replays it
on a py3Dmol view and the HTML report replays the same list in the browser, so both draw a structure alike.
pLDDT is read from the B-factor column (where ESMFold and AlphaFold write it), one value per residue (its Cα).

A ``Prediction`` is recognised by what it does (``is_prediction``), not imported: ``Prediction``'s notebook display
calls this module, so it cannot import ``prediction`` back.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import biotite.structure as struc
import numpy as np

from esmfold_lite.io.structure import parse_structure, read_structure_bytes
from esmfold_lite.viz.colors import PLDDT_BANDS, chain_color, plddt_band_index
from esmfold_lite.viz.escaping import escape_html, escape_script, show_bidi_controls

if TYPE_CHECKING:  # for annotations only: prediction imports this module (its notebook display)
    from esmfold_lite.prediction import Prediction

COLOR_MODES: tuple[str, ...] = ("plddt", "chain", "rainbow")
BACKBONE_ATOMS = ["N", "C", "O"]  # left out of side-chain sticks (the Cα joins the stick to the cartoon)

Command = tuple[str, list]  # (3Dmol GLViewer method, its arguments), e.g. ("setStyle", [selection, style])


@dataclass
class ViewStructure:
    """A structure ready for 3Dmol: its text, the 3Dmol format name ("pdb" or "cif") and its atoms."""

    text: str
    format: str
    atoms: struc.AtomArray  # with the ``b_factor`` annotation


def _text_format(text: str) -> str:
    return "cif" if re.search(r"^\s*(data_|_atom_site\.|loop_)", text, flags=re.M) else "pdb"


def is_prediction(obj: object) -> bool:
    """Whether ``obj`` is a ``Prediction`` (it writes its sequences as structures), not a path or structure text."""
    return hasattr(obj, "to_atom_array") and hasattr(obj, "select")


def load_view_structure(pred_or_path, i: int = 0) -> ViewStructure:
    """A ``Prediction`` (sequence ``i``), a path to a PDB/mmCIF file (optionally .gz), or PDB/mmCIF text.

    Raises FileNotFoundError for a missing file, ValueError for anything that is not a readable PDB/mmCIF structure,
    IndexError for ``i`` out of range.
    """
    if is_prediction(pred_or_path):
        if not -len(pred_or_path) <= i < len(pred_or_path):
            raise IndexError(f"sequence {i} requested from a prediction of {len(pred_or_path)} sequence(s)")
        return ViewStructure(pred_or_path.to_pdb(i), "pdb", pred_or_path.to_atom_array(i))
    if isinstance(pred_or_path, bytes):
        pred_or_path = pred_or_path.decode("utf-8", errors="replace")
    if isinstance(pred_or_path, str) and "\n" in pred_or_path:
        fmt = _text_format(pred_or_path)
        atoms = parse_structure(pred_or_path.encode(), fmt, f"{fmt.upper()} text", extra_fields=("b_factor",))
        return ViewStructure(pred_or_path, fmt, atoms)
    if not isinstance(pred_or_path, (str, os.PathLike)):
        raise TypeError(
            f"expected a Prediction, a PDB/mmCIF file path or PDB/mmCIF text, got {type(pred_or_path).__name__}"
        )
    data, fmt = read_structure_bytes(pred_or_path)
    if fmt not in ("pdb", "cif"):
        raise ValueError(f"{pred_or_path}: the 3D view reads PDB or mmCIF files; write this {fmt} file as mmCIF first")
    atoms = parse_structure(data, fmt, str(pred_or_path), extra_fields=("b_factor",))
    return ViewStructure(data.decode("utf-8", errors="replace"), fmt, atoms)


def residue_ranges(res_ids) -> list:
    """Residue numbers → 3Dmol ``resi`` selection: runs of consecutive numbers as "first-last", lone ones as ints."""
    res_ids = sorted({int(r) for r in res_ids})
    ranges, start = [], 0
    for k in range(1, len(res_ids) + 1):
        if k == len(res_ids) or res_ids[k] != res_ids[k - 1] + 1:
            first, last = res_ids[start], res_ids[k - 1]
            ranges.append(first if first == last else f"{first}-{last}")
            start = k
    return ranges


def residue_plddt(atoms: struc.AtomArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chain ids, residue numbers, pLDDT) per residue, pLDDT from the Cα's B-factor (the residue mean without Cα)."""
    starts = struc.get_residue_starts(atoms)
    chains, res_ids = atoms.chain_id[starts], atoms.res_id[starts]
    plddt = struc.apply_residue_wise(atoms, atoms.b_factor, np.mean)
    is_ca = atoms.atom_name == "CA"
    ca_residue = np.searchsorted(starts, np.nonzero(is_ca)[0], side="right") - 1
    plddt[ca_residue] = atoms.b_factor[is_ca]
    return chains, res_ids, plddt


def chain_numbers(chains: np.ndarray) -> np.ndarray:
    """Chain ids (one per residue) as 0, 1, ... in order of appearance, as ``Prediction.chain_index`` numbers them."""
    order = {c: k for k, c in enumerate(dict.fromkeys(chains.tolist()))}
    return np.asarray([order[c] for c in chains.tolist()], dtype=int)


def _styles(color: dict, sidechains: bool) -> tuple[dict, dict | None]:
    return {"cartoon": color}, ({"stick": {**color, "radius": 0.2}} if sidechains else None)


def view_commands(atoms: struc.AtomArray, color: str = "plddt", sidechains: bool = False) -> list[Command]:
    """3Dmol viewer calls that colour ``atoms`` (as loaded into the viewer) by ``color``.

    Cartoon for the backbone; ``sidechains`` adds sticks for the side chains in the same colours. Complexes get a
    chain label at the start of each chain.
    """
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    chains, res_ids, plddt = residue_plddt(atoms)
    chain_order = list(dict.fromkeys(chains.tolist()))
    groups: list[tuple[dict, dict]] = []  # (selection, colour)
    if color == "plddt":
        band = plddt_band_index(plddt)
        for chain in chain_order:
            for k, b in enumerate(PLDDT_BANDS):
                in_band = (chains == chain) & (band == k)
                if in_band.any():
                    groups.append(({"chain": chain, "resi": residue_ranges(res_ids[in_band])}, {"color": b.color}))
    elif color == "chain":
        groups = [({"chain": chain}, {"color": chain_color(k)}) for k, chain in enumerate(chain_order)]
    else:  # rainbow: blue at the N-terminus to red at the C-terminus of each chain
        for chain in chain_order:
            ids = res_ids[chains == chain]
            gradient = {"prop": "resi", "gradient": "roygb", "min": int(ids.max()), "max": int(ids.min())}
            groups.append(({"chain": chain}, {"colorscheme": gradient}))
    commands: list[Command] = [("setStyle", [{}, {"cartoon": {"color": "lightgrey"}}])]
    for selection, colour in groups:
        cartoon, sticks = _styles(colour, sidechains)
        commands.append(("setStyle", [selection, cartoon]))
        if sticks:
            commands.append(("addStyle", [{**selection, "not": {"atom": BACKBONE_ATOMS}}, sticks]))
    if len(chain_order) > 1:
        for chain in chain_order:
            first = int(res_ids[chains == chain].min())
            label = {"fontSize": 14, "fontColor": "black", "backgroundColor": "white", "backgroundOpacity": 0.8}
            text = show_bidi_controls(f"chain {chain}")  # a chain id of an mmCIF file can be any text
            commands.append(("addLabel", [text, label, {"chain": chain, "resi": first, "atom": "CA"}]))
    return commands


def legend_commands() -> list[Command]:
    """The pLDDT legend as 3Dmol labels in the top-left corner of the viewer (screen coordinates)."""
    return [
        ("addLabel", [band.label, {"position": {"x": 6, "y": 6 + 24 * k, "z": 0}, "useScreen": True, "fontSize": 12,
                                   "backgroundColor": band.color, "backgroundOpacity": 1.0,
                                   "fontColor": "white" if k == 0 else "black"}])  # fmt: skip
        for k, band in enumerate(PLDDT_BANDS)
    ]


def _require_py3dmol():
    try:
        import py3Dmol
    except ImportError:
        raise ImportError("the 3D view needs py3Dmol: pip install 'esmfold-lite[notebook]'") from None
    return py3Dmol


@functools.cache
def _safe_view_class() -> type:
    """``py3Dmol.view`` whose HTML passes its script through ``escape_script``: py3Dmol writes the structure text
    and labels into the script as JSON, where a ``</script>`` in the data would end the element."""
    py3Dmol = _require_py3dmol()

    class SafeView(py3Dmol.view):
        def _make_html(self) -> str:  # what show(), _repr_html_() and write_html() emit
            head, tag, rest = super()._make_html().partition("<script>")
            script, end, tail = rest.rpartition("</script>")
            return head + tag + escape_script(script) + end + tail

        def update(self) -> None:  # commands added after the view was shown, sent in a script of their own
            self.updatejs = escape_script(self.updatejs)
            super().update()

    return SafeView


def show(
    pred_or_path,
    i: int = 0,
    color: str = "plddt",
    sidechains: bool = False,
    width: int = 640,
    height: int = 480,
    legend: bool = True,
):
    """A py3Dmol view of a structure, coloured by ``color``: "plddt" (AlphaFold DB bands, with a legend when
    ``legend``), "chain" or "rainbow" (N → C, blue → red, per chain).

    The view's script is safe whatever the structure holds (``escape_script``: a ``</script>`` in a REMARK line or
    a chain id cannot end it).

    Args:
        pred_or_path: a ``Prediction`` (sequence ``i`` is shown), a PDB/mmCIF file path (optionally .gz), or
            PDB/mmCIF text. pLDDT colours read the B-factors, where ESMFold writes pLDDT.
        sidechains: draw side chains as sticks as well.
        width, height: size of the view in pixels.
    Returns:
        ``py3Dmol.view``; displaying it in Jupyter draws it, ``view.write_html()`` gives its HTML.
    Raises:
        FileNotFoundError (missing file), ValueError (not a PDB/mmCIF structure, unknown ``color``), ImportError
        (py3Dmol not installed).
    """
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    structure = load_view_structure(pred_or_path, i)
    view = _safe_view_class()(width=width, height=height)
    view.addModel(structure.text, structure.format)
    commands = view_commands(structure.atoms, color, sidechains)
    if color == "plddt" and legend:
        commands += legend_commands()
    for method, args in commands:
        getattr(view, method)(*args)
    view.zoomTo()
    return view


MAX_HTML_VIEWS = 4  # 3D views in a Prediction's notebook display; the scores table lists every sequence


def prediction_html(pred: Prediction) -> str:
    """HTML for a ``Prediction`` in a notebook: a table of its sequences' scores and 3D views coloured by pLDDT."""
    rows = []
    for i, sequence in enumerate(pred.sequences):
        chains = sequence.count(":") + 1
        rows.append(
            f"<tr><td>{i}</td><td>{int(pred.lengths[i])}</td><td>{chains}</td>"
            f"<td>{float(pred.mean_plddt[i]):.1f}</td><td>{float(pred.ptm[i]):.3f}</td>"
            f"<td style='font-family:monospace'>{escape_html(_shorten(sequence, 40))}</td></tr>"
        )
    table = (
        "<table><tr><th>#</th><th>residues</th><th>chains</th><th>mean pLDDT</th><th>pTM</th><th>sequence</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    try:
        _require_py3dmol()
    except ImportError as exc:
        return f"<div>{table}<p>{escape_html(str(exc))}</p></div>"
    views = [
        f"<div style='display:inline-block;margin:4px'><div>#{i}</div>"
        f"{show(pred, i, width=420, height=320).write_html()}</div>"
        for i in range(min(len(pred), MAX_HTML_VIEWS))
    ]
    more = len(pred) - MAX_HTML_VIEWS
    note = f"<p>{more} more: viz.show(prediction, i)</p>" if more > 0 else ""
    return f"<div>{table}<div>{''.join(views)}</div>{note}</div>"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
