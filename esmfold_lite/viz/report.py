"""One self-contained HTML file for a finished ``predict`` run: a sortable table of every protein and, per protein, a
3D view coloured by pLDDT and its pLDDT / PAE plots.

Read from OUTDIR: ``summary.tsv`` (the table: id, length, mean pLDDT, pTM, status, error; the FASTA header) and per
protein whatever exists of ``<id>.pdb`` / ``.cif`` (the structure, PDB preferred), ``<id>.json`` / ``.npz`` (pLDDT
and PAE; without them pLDDT comes from the structure's B-factors and the PAE from the AlphaFold DB layout file
``<id>_predicted_aligned_error_v1.json``, else the PAE plot is left out). A protein whose files are missing or
unreadable keeps its table row and says what is missing.

Size: structures are embedded gzip-compressed (base64) and decompressed by the browser when their view is made;
the plots are small PNGs. Speed: a 3D view (a WebGL context) is created only while its protein is on screen and
released when it scrolls away, so a report of thousands of proteins opens fast and browsers' limit on live WebGL
contexts is never reached. 3Dmol.js comes from the CDN build py3Dmol uses, or is embedded from a local file
(``threedmol_js``) so the report opens with no network at all.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from esmfold_lite.io.atomic import atomic_write_text, write_failure
from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.io.modelcif import RANDOM_WEIGHTS_REMARK
from esmfold_lite.io.output_names import FORMATS, REPORT_NAME, REPORT_PARALLEL_FROM, SUMMARY_NAME, output_paths
from esmfold_lite.io.structure import parse_structure, read_structure_bytes
from esmfold_lite.io.summary_tsv import read_summary
from esmfold_lite.viz.colors import PLDDT_BANDS
from esmfold_lite.viz.escaping import escape_html, escape_script
from esmfold_lite.viz.plots import confidence_figure, figure_png
from esmfold_lite.viz.view import chain_numbers, residue_plddt, view_commands

logger = logging.getLogger(__name__)

THREEDMOL_CDN = "https://cdn.jsdelivr.net/npm/3dmol@2.5.5/build/3Dmol-min.js"  # py3Dmol 2.5.5's default
PLOT_SIZE = (7.0, 2.6)  # inches, at PLOT_DPI: a 560 x 208 px image
PLOT_DPI = 80
PLOT_COLORS = 256  # palette PNG: a third of the size of a true-colour one, looking the same


class ReportError(Exception):
    """The report cannot be made at all (no summary.tsv, unreadable 3Dmol.js, output not writable)."""


def threedmol_cdn_url() -> str:
    """The 3Dmol.js build py3Dmol loads (its ``view(js=...)`` default), or ``THREEDMOL_CDN`` without py3Dmol."""
    try:
        import inspect

        import py3Dmol
    except ImportError:
        return THREEDMOL_CDN
    default = inspect.signature(py3Dmol.view).parameters.get("js")
    return default.default if default is not None and isinstance(default.default, str) else THREEDMOL_CDN


@dataclass
class Confidence:
    """What the plots need: pLDDT (L,), PAE (L, L) or None, chain number per residue (L,)."""

    plddt: np.ndarray
    pae: np.ndarray | None
    chain_index: np.ndarray
    random_weights: bool = False  # the JSON says the model had random weights (esmfold-lite weights make-random)


@dataclass
class ProteinPage:
    """One protein's section of the report."""

    row: dict[str, str]
    structure: dict | None = None  # {"name", "format", "data" (gzip, base64), "commands"} for report.js
    plot_png: bytes | None = None
    problems: list[str] = field(default_factory=list)  # unreadable or missing files (shown and logged)
    notes: list[str] = field(default_factory=list)  # what the run did not write (shown)
    random_weights: bool = False  # its files say a model of random weights made it (a banner on the report)


def _chain_index_from_sequence(sequence: str) -> np.ndarray:
    return np.concatenate([np.full(len(chain), k) for k, chain in enumerate(sequence.split(":"))])


def _confidence_from_json(path: Path) -> Confidence:
    data = json.loads(path.read_text(encoding="utf-8"))
    plddt = np.asarray(data["plddt"], dtype=float)
    pae = np.asarray(data["pae"], dtype=float) if data.get("pae") is not None else None
    sequence = data.get("sequence") or ""
    chain_index = _chain_index_from_sequence(sequence) if sequence else np.zeros(len(plddt), int)
    if len(chain_index) != len(plddt):
        chain_index = np.zeros(len(plddt), int)
    return Confidence(plddt, pae, chain_index, random_weights=data.get("random_weights") is True)


def _confidence_from_npz(path: Path) -> Confidence:
    with np.load(path) as arrays:
        plddt = arrays["plddt"].astype(float)
        pae = arrays["pae"].astype(float) if "pae" in arrays else None
        chain_index = arrays["chain_index"] if "chain_index" in arrays else np.zeros(len(plddt), int)
    return Confidence(plddt, pae, chain_index)


def _confidence_from_atoms(atoms) -> Confidence:
    chains, _, plddt = residue_plddt(atoms)
    return Confidence(plddt, None, chain_numbers(chains))


def _afdb_pae(path: Path, residues: int) -> np.ndarray:
    """The PAE of AlphaFold DB's PAE JSON, which must cover the structure's ``residues``."""
    pae = read_afdb_pae(path)
    if len(pae) != residues:
        raise ValueError(f"its PAE covers {len(pae)} residues, the structure {residues} (it leaves out unknown ones)")
    return pae


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def protein_page(outdir: Path, row: dict[str, str]) -> ProteinPage:
    """Read what exists of one protein's files; problems are recorded, never raised.

    Only proteins whose row says ok are read: files beside a failed or pending row may be left from an earlier
    run of another sequence."""
    page = ProteinPage(row)
    if row.get("status") != "ok":
        return page
    try:
        paths = output_paths(outdir, row["id"], FORMATS)
    except ValueError as exc:  # an id that would leave OUTDIR (a hand-edited summary)
        page.problems.append(str(exc))
        return page
    atoms = None
    for fmt in ("pdb", "cif"):
        path = paths[fmt]
        if not path.is_file():
            continue
        try:
            data, file_format = read_structure_bytes(path)
            parsed = parse_structure(data, file_format, path.name, extra_fields=("b_factor",))
            commands = view_commands(parsed, "plddt")
        except (OSError, ValueError) as exc:
            page.problems.append(f"cannot read {path.name}: {exc}")
            continue
        atoms = parsed
        page.random_weights = RANDOM_WEIGHTS_REMARK.encode() in data  # PDB REMARK 250, mmCIF title and remark
        payload = base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")
        page.structure = {"name": path.name, "format": file_format, "data": payload, "commands": commands}
        break
    if page.structure is None and not page.problems:  # an unreadable one is named above
        page.problems.append("no structure file (.pdb or .cif) in the output directory")

    confidence = None
    for fmt, reader in (("json", _confidence_from_json), ("npz", _confidence_from_npz)):
        if paths[fmt].is_file():
            try:
                confidence = reader(paths[fmt])
                break
            except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
                page.problems.append(f"cannot read {paths[fmt].name}: {type(exc).__name__}: {exc}")
    if confidence is None and atoms is not None:
        confidence = _confidence_from_atoms(atoms)
        if paths["pae"].is_file():
            try:
                confidence.pae = _afdb_pae(paths["pae"], len(confidence.plddt))
            except (OSError, ValueError) as exc:
                page.problems.append(f"cannot read {paths['pae'].name}: {exc}")
    if confidence is None:
        return page
    page.random_weights = page.random_weights or confidence.random_weights
    if confidence.pae is None:
        page.notes.append("no PAE: predict writes it with --formats json, npz or pae")
    try:
        figure = confidence_figure(
            confidence.plddt, confidence.pae, confidence.chain_index,
            mean_plddt=_float(row.get("mean_plddt", "")), ptm=_float(row.get("ptm", "")), size=PLOT_SIZE,
            dpi=PLOT_DPI,
        )  # fmt: skip
        page.plot_png = figure_png(figure, colors=PLOT_COLORS)
    except (ValueError, TypeError, IndexError) as exc:  # arrays of the wrong shape in a hand-edited file
        page.problems.append(f"cannot plot the confidences: {type(exc).__name__}: {exc}")
    return page


# --- HTML -------------------------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("esmfold_lite.viz").joinpath(name).read_text(encoding="utf-8")


def threedmol_script(threedmol_js: str | os.PathLike | None = None) -> str:
    """The ``<script>`` element that loads 3Dmol.js: the CDN build, or the file ``threedmol_js`` embedded."""
    if threedmol_js is None:
        return f'<script src="{escape_html(threedmol_cdn_url())}"></script>'
    path = Path(threedmol_js)
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read 3Dmol.js from {path}: {exc}") from exc
    if "$3Dmol" not in code:
        raise ReportError(f"{path} is not 3Dmol.js (take build/3Dmol-min.js of the npm package 3dmol)")
    return "<script>" + code.replace("</script", "<\\/script") + "</script>"


def _json_script(data: dict) -> str:
    """JSON inside a ``<script type="application/json">`` (``escape_script``: the data cannot close the element)."""
    return escape_script(json.dumps(data, separators=(",", ":")))


def _number_cell(text: str, digits: int) -> str:
    value = _float(text)
    if value is None:
        return '<td data-value=""></td>'
    return f'<td data-value="{value}">{value:.{digits}f}</td>'


def _table_row(k: int, page: ProteinPage) -> str:
    row = page.row
    status = row.get("status") or "unknown"
    message = "; ".join(filter(None, [row.get("error"), row.get("notes")]))
    return (
        f'<tr class="status-{escape_html(status)}"><td data-value="{k}">{k}</td>'
        f'<td><a href="#p{k}">{escape_html(row["id"])}</a></td>'
        f"{_number_cell(row.get('length', ''), 0)}{_number_cell(row.get('mean_plddt', ''), 1)}"
        f"{_number_cell(row.get('ptm', ''), 3)}"
        f'<td><span class="status">{escape_html(status)}</span></td><td>{escape_html(message)}</td></tr>'
    )


def _section(k: int, page: ProteinPage) -> str:
    row = page.row
    name = escape_html(row["id"])
    status = escape_html(row.get("status") or "unknown")
    facts = [f"{row['length']} residues" if row.get("length") else ""]
    if _float(row.get("mean_plddt", "")) is not None:
        facts.append(f"mean pLDDT {float(row['mean_plddt']):.1f}")
    if _float(row.get("ptm", "")) is not None:
        facts.append(f"pTM {float(row['ptm']):.3f}")
    parts = [f'<section class="protein status-{status}" id="p{k}"><h2>{name} <span class="status">{status}</span></h2>']
    if row.get("header"):  # the FASTA header the id was made from
        parts.append(f'<p class="header">{escape_html(row["header"])}</p>')
    parts.append(f"<p class=\"facts\">{escape_html(' · '.join(filter(None, facts)))}</p>")
    if row.get("error"):
        parts.append(f'<p class="error">{escape_html(row["error"])}</p>')
    if page.random_weights:
        parts.append(f'<p class="random-weights">{RANDOM_WEIGHTS_REMARK}</p>')
    parts.extend(f'<p class="problem">{escape_html(text)}</p>' for text in page.problems)
    parts.extend(f'<p class="note">{escape_html(text)}</p>' for text in page.notes)
    if page.structure is not None or page.plot_png is not None:
        parts.append('<div class="panels">')
        if page.structure is not None:
            parts.append(
                f'<div class="viewer" data-structure="s{k}"><span class="placeholder">3D view of '
                f"{escape_html(page.structure['name'])}</span></div>"
                f'<script type="application/json" id="s{k}">{_json_script(page.structure)}</script>'
            )
        if page.plot_png is not None:
            image = base64.b64encode(page.plot_png).decode("ascii")
            width, height = (round(d * PLOT_DPI) for d in PLOT_SIZE)
            parts.append(
                f'<img class="plots" width="{width}" height="{height}" alt="pLDDT and PAE of {name}" '
                f'src="data:image/png;base64,{image}">'
            )
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _legend() -> str:
    items = "".join(
        f'<span class="band"><span class="swatch" style="background:{band.color}"></span>{escape_html(band.label)}'
        "</span>"
        for band in PLDDT_BANDS
    )
    return f'<div class="legend">3D views coloured by pLDDT: {items}</div>'


def render_report(outdir: Path, pages: list[ProteinPage], script: str) -> str:
    """The report's HTML text; ``script`` loads 3Dmol.js (``threedmol_script``)."""
    title = f"esmfold-lite report: {outdir.name}"
    counts: dict[str, int] = {}
    for page in pages:
        counts[page.row.get("status") or "unknown"] = counts.get(page.row.get("status") or "unknown", 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    header = (
        "<tr>"
        + "".join(
            f'<th data-type="{kind}">{label}</th>'
            for label, kind in [("#", "number"), ("id", "text"), ("length", "number"), ("mean pLDDT", "number"),
                                ("pTM", "number"), ("status", "text"), ("error", "text")]  # fmt: skip
        )
        + "</tr>"
    )
    rows = "".join(_table_row(k, page) for k, page in enumerate(pages, start=1))
    sections = "".join(_section(k, page) for k, page in enumerate(pages, start=1))
    random = sum(page.random_weights for page in pages)
    banner = (
        f'<p class="random-weights banner" role="alert">{RANDOM_WEIGHTS_REMARK}: {random} of {len(pages)} proteins '
        "were folded by a model of random weights, made to check an install or a set-up. Their structures and "
        "confidences are noise; fold with real weights for predictions.</p>\n"
        if random
        else ""
    )
    source = escape_html(str(outdir / SUMMARY_NAME))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape_html(title)}</title><style>{_asset("report.css")}</style></head>
<body><header><h1>{escape_html(title)}</h1>
{banner}<p class="counts">{len(pages)} proteins: {escape_html(summary)} (from {source})</p>
{_legend()}
<p class="controls"><input type="search" id="filter" placeholder="filter by id" aria-label="filter by id">
<label><input type="checkbox" id="failed-only"> failed only</label></p></header>
<table id="summary"><thead>{header}</thead><tbody>{rows}</tbody></table>
<main>{sections}</main>
{script}
<script>{_asset("report.js")}</script>
</body></html>
"""


def default_jobs() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _protein_pages(outdir: Path, rows: list[dict[str, str]], jobs: int) -> list[ProteinPage]:
    """``protein_page`` of every row, in ``jobs`` worker processes for large runs (plotting dominates the time)."""
    if jobs <= 1 or len(rows) < REPORT_PARALLEL_FROM:
        return [protein_page(outdir, row) for row in rows]
    # spawn, not fork: forking a process that has run torch (e.g. a notebook kernel) can hang the children
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(partial(protein_page, outdir), rows, chunksize=8))


def write_report(
    outdir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    threedmol_js: str | os.PathLike | None = None,
    jobs: int | None = None,
) -> Path:
    """Write the HTML report of the ``predict`` run in ``outdir`` to ``output`` (default ``OUTDIR/report.html``).

    Args:
        threedmol_js: a local 3Dmol.js (e.g. ``build/3Dmol-min.js`` of the npm package ``3dmol``) to embed, so the
            report needs no network; None links the CDN build that py3Dmol uses.
        jobs: processes reading and plotting the proteins of large runs (default: the CPUs available).
    Returns:
        The path written.
    Raises:
        ReportError: no ``summary.tsv`` (or no protein in it), unreadable 3Dmol.js, output not writable.
    """
    outdir = Path(outdir)
    summary_path = outdir / SUMMARY_NAME
    if not summary_path.is_file():
        raise ReportError(f"{summary_path} not found: give the output directory of a finished esmfold-lite predict run")
    try:
        rows = read_summary(summary_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {summary_path}: {exc}") from exc
    if not rows:
        raise ReportError(f"{summary_path} lists no proteins")
    script = threedmol_script(threedmol_js)
    pages = _protein_pages(outdir, rows, default_jobs() if jobs is None else jobs)
    for page in pages:
        for problem in page.problems:
            logger.warning("%s: %s", page.row["id"], problem)
    output = Path(output) if output is not None else outdir / REPORT_NAME
    try:
        atomic_write_text(output, render_report(outdir, pages, script))
    except OSError as exc:  # a full or failing disk: no partial report is left
        raise ReportError(write_failure(output, exc)) from exc
    return output
