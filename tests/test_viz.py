"""``esmfold_lite.viz``: 3D views in every colour mode from every input, the plots, and a Prediction's displays."""

from __future__ import annotations

import gzip
import json

import numpy as np
import py3Dmol
import pytest
from fake_esmfold import fake_prediction
from matplotlib.figure import Figure

from esmfold_lite import viz
from esmfold_lite.io.confidence import read_afdb_pae
from esmfold_lite.io.structure import load_structure
from esmfold_lite.pipeline.outputs import render_protein, write_files
from esmfold_lite.viz.colors import PLDDT_BANDS, chain_color, plddt_band_index
from esmfold_lite.viz.escaping import escape_script
from esmfold_lite.viz.view import load_view_structure, residue_ranges, view_commands

MONOMER = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
COMPLEX = "MKTAYIAKQRQISFVKSHFSRQ:GSHMLEDPVDAFQ"


def _expand(resi) -> list[int]:
    out = []
    for item in resi:
        if isinstance(item, int):
            out.append(item)
        else:
            first, last = item.rsplit("-", 1)
            out.extend(range(int(first), int(last) + 1))
    return out


def cartoon_colors(commands) -> dict[tuple[str, int], object]:
    """(chain, residue) → the cartoon colour (or colour scheme) the setStyle calls leave it with."""
    colors = {}
    for method, args in commands:
        if method != "setStyle" or not args[0]:
            continue
        selection, style = args
        value = style["cartoon"].get("color", style["cartoon"].get("colorscheme"))
        for r in _expand(selection["resi"]) if "resi" in selection else ["*"]:
            colors[(selection["chain"], r)] = value
    return colors


def ca_plddt(atoms) -> dict[tuple[str, int], float]:
    ca = atoms[atoms.atom_name == "CA"]
    return {(str(c), int(r)): float(b) for c, r, b in zip(ca.chain_id, ca.res_id, ca.b_factor, strict=True)}


@pytest.fixture
def structures(tmp_path):
    """The same structures as Prediction, PDB file, mmCIF file, gzipped PDB and PDB text; a monomer and a complex."""
    pred = fake_prediction([MONOMER, COMPLEX])
    inputs = {}
    for i, name in enumerate(("monomer", "complex")):
        (tmp_path / f"{name}.pdb").write_text(pred.to_pdb(i))
        (tmp_path / f"{name}.cif").write_text(pred.to_mmcif(i))
        (tmp_path / f"{name}.pdb.gz").write_bytes(gzip.compress(pred.to_pdb(i).encode()))
        inputs[name] = {
            "prediction": (pred, i),
            "pdb path": (tmp_path / f"{name}.pdb", 0),
            "pdb path as str": (str(tmp_path / f"{name}.pdb"), 0),
            "mmcif path": (tmp_path / f"{name}.cif", 0),
            "gzipped pdb": (tmp_path / f"{name}.pdb.gz", 0),
            "pdb text": (pred.to_pdb(i), 0),
            "mmcif text": (pred.to_mmcif(i), 0),
        }
    return inputs


@pytest.mark.parametrize("color", ["plddt", "chain", "rainbow"])
@pytest.mark.parametrize("molecule", ["monomer", "complex"])
def test_show_colours_every_residue_from_every_input(structures, color, molecule):
    for source, (value, i) in structures[molecule].items():
        view = viz.show(value, i=i, color=color, width=300, height=200)
        assert isinstance(view, py3Dmol.view), source
        page = view.write_html()
        assert "addModel" in page and "width: 300px" in page and "zoomTo" in page

        structure = load_view_structure(value, i)
        plddt = ca_plddt(structure.atoms)
        commands = view_commands(structure.atoms, color)
        colors = cartoon_colors(commands)
        chains = list(dict.fromkeys(chain for chain, _ in plddt))
        assert len(chains) == (2 if molecule == "complex" else 1)
        if color == "plddt":
            # every residue coloured by its own pLDDT band, read from the B-factors
            bands = plddt_band_index(list(plddt.values()))
            assert {key: colors[key] for key in plddt} == {
                key: PLDDT_BANDS[b].color for key, b in zip(plddt, bands, strict=True)
            }, source
            assert all(escape_script(json.dumps(band.label)) in page for band in PLDDT_BANDS)  # the legend
            assert len(set(bands)) >= 2  # the fake pLDDT spans several bands, so this checks something
        elif color == "chain":
            assert [colors[(chain, "*")] for chain in chains] == [chain_color(k) for k in range(len(chains))]
        else:
            for chain in chains:
                numbers = [r for c, r in plddt if c == chain]
                gradient = colors[(chain, "*")]
                assert (gradient["gradient"], gradient["min"], gradient["max"]) == ("roygb", max(numbers), min(numbers))
        labels = [args[0] for method, args in commands if method == "addLabel"]
        assert labels == ([f"chain {c}" for c in chains] if molecule == "complex" else [])


def test_pdb_file_and_prediction_give_the_same_colours(structures):
    pred, i = structures["complex"]["prediction"]
    from_prediction = view_commands(load_view_structure(pred, i).atoms)
    from_file = view_commands(load_structure(structures["complex"]["pdb path"][0], extra_fields=("b_factor",)))
    assert from_prediction == from_file


def test_sidechains_are_sticks_without_backbone_atoms(structures):
    pred, _ = structures["monomer"]["prediction"]
    view = viz.show(pred, sidechains=True)
    commands = view_commands(load_view_structure(pred).atoms, "plddt", sidechains=True)
    sticks = [args for method, args in commands if method == "addStyle"]
    assert sticks and all(sel["not"] == {"atom": ["N", "C", "O"]} and "stick" in style for sel, style in sticks)
    assert "stick" in view.write_html()
    assert not any(method == "addStyle" for method, _ in view_commands(load_view_structure(pred).atoms, "plddt"))


def test_residue_ranges():
    assert residue_ranges([5, 1, 2, 3, 7, 8, 10]) == ["1-3", 5, "7-8", 10]
    assert residue_ranges([]) == []


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda d: d / "missing.pdb", FileNotFoundError, "structure file not found: .*missing.pdb"),
        (lambda d: str(d / "missing.cif"), FileNotFoundError, "structure file not found"),
        (lambda d: _write(d / "notes.txt", "hello\n"), ValueError, "notes.txt: unknown structure format"),
        (lambda d: _write(d / "seq.pdb", ">p\nMKV\n"), ValueError, "seq.pdb: no atoms found; is it a PDB file"),
        (lambda d: _write(d / "junk.cif", "\x00\x01 binary junk"), ValueError, "junk.cif: cannot read it as a CIF"),
        (lambda d: ">p\nMKVLA\n", ValueError, "PDB text: no atoms found"),
        (lambda d: _write(d / "x.cif", "data_x\n_cell.length_a 1\n"), ValueError, "Missing 'atom_site'"),
        (lambda d: 42, TypeError, "expected a Prediction, a PDB/mmCIF file path or PDB/mmCIF text, got int"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        viz.show(make(tmp_path))


def _write(path, text):
    path.write_text(text)
    return path


def test_bad_options_are_clear_errors():
    pred = fake_prediction([MONOMER])
    with pytest.raises(ValueError, match="color must be one of plddt, chain, rainbow, got 'bfactor'"):
        viz.show(pred, color="bfactor")
    with pytest.raises(IndexError, match="sequence 3 requested from a prediction of 1 sequence"):
        viz.show(pred, i=3)


def test_plot_plddt_and_pae_mark_chains_on_a_0_to_30_scale():
    pred = fake_prediction([MONOMER, COMPLEX])
    fig = viz.plot_plddt(pred, i=1)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_ylim() == (0, 100)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), pred.select(1).plddt[0].numpy())
    boundary = len(COMPLEX.split(":")[0]) + 0.5
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [boundary]
    assert [t.get_text() for t in ax.texts] == ["A", "B"]

    fig = viz.plot_pae(pred, i=1)
    ax, colorbar = fig.axes
    (image,) = ax.images
    assert image.get_clim() == (0, 30)
    assert colorbar.get_ylim() == (0, 30) and "Å" in colorbar.get_ylabel()
    np.testing.assert_allclose(image.get_array(), pred.select(1).pae[0].numpy())
    vertical, horizontal = ax.lines
    assert list(vertical.get_xdata()) == [boundary] * 2 and list(horizontal.get_ydata()) == [boundary] * 2

    fig = viz.plot_pae(pred, i=0)
    assert not fig.axes[0].lines  # one chain: no boundary
    fig.savefig(__import__("io").BytesIO(), format="png")  # figures are usable after the notebook close


def test_plot_pae_reads_an_alphafold_db_pae_file(tmp_path):
    pred = fake_prediction([MONOMER, COMPLEX])
    paths = write_files(tmp_path, "complex", render_protein(pred, 1, "complex", ("pae",)))
    for source in (paths["pae"], str(paths["pae"])):
        fig = viz.plot_pae(source)
        ax, _ = fig.axes
        (image,) = ax.images
        assert image.get_clim() == (0, 30) and ax.get_title() == "PAE"
        np.testing.assert_array_equal(image.get_array(), read_afdb_pae(paths["pae"]))
        np.testing.assert_allclose(image.get_array(), pred.select(1).pae[0].numpy(), atol=0.5)
        assert not ax.lines  # the file holds no chains
    with pytest.raises(ValueError, match="not an AlphaFold DB PAE file"):
        viz.plot_pae(write_files(tmp_path, "other", render_protein(pred, 1, "other", ("pdb",)))["pdb"])


def test_plot_plddt_reads_a_structure_file(tmp_path):
    pred = fake_prediction([MONOMER, COMPLEX])
    paths = write_files(tmp_path, "complex", render_protein(pred, 1, "complex", ("pdb", "cif")))
    for source in (paths["pdb"], str(paths["cif"])):
        (ax,) = viz.plot_plddt(source).axes
        np.testing.assert_allclose(ax.lines[0].get_ydata(), pred.select(1).plddt[0].numpy(), atol=0.01)
        assert [t.get_text() for t in ax.texts] == ["A", "B"]


def test_prediction_repr_and_notebook_html():
    pred = fake_prediction([MONOMER, COMPLEX])
    text = repr(pred)
    assert text.splitlines()[0] == f"Prediction(2 sequences, padded length {pred.mask.shape[-1]})"
    assert "[1] 35 residues, 2 chains, mean pLDDT" in text and "pTM 0.535" in text
    assert "tensor" not in text
    page = pred._repr_html_()
    assert page.count("3dmolviewer_") >= 4  # two views (py3Dmol uses the id in the div and the script)
    assert "<th>mean pLDDT</th>" in page and f"{float(pred.mean_plddt[1]):.1f}" in page
