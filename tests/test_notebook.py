"""``examples/quickstart.ipynb`` runs top to bottom (nbclient, a real kernel) on a checkpoint in the official format,
and its outputs hold the 3D viewer's HTML and the plots."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_and_shows_the_structures(tmp_path, monkeypatch, official_checkpoint):
    shutil.copy(NOTEBOOK, tmp_path)
    shutil.copy(ROOT / "examples" / "proteins.fasta", tmp_path)
    monkeypatch.setenv("ESMFOLD_LITE_MODEL", str(official_checkpoint))  # the notebook's parameters cell reads these
    monkeypatch.setenv("ESMFOLD_LITE_DEVICE", "cpu")
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails

    outputs = [(cell.source, output) for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for _, output in outputs if output.output_type == "error"]

    def html_of(code: str) -> list[str]:
        return [o.data["text/html"] for source, o in outputs if code in source and "text/html" in o.get("data", {})]

    # the viewer's HTML: py3Dmol's container and script with the structure, for the prediction and for show()
    for code in ("\npred", "viz.show(pred", "viz.show(insulin", 'viz.show("ubiquitin.pdb"'):
        (page,) = html_of(code)
        assert 'id="3dmolviewer_' in page and "addModel" in page and "ATOM" in page, code
    assert "mean pLDDT" in html_of("\npred")[0]
    assert "chain B" in html_of("viz.show(insulin")[0]
    pngs = [source for source, o in outputs if "image/png" in o.get("data", {})]
    assert sum("plot_pae" in s for s in pngs) == 2 and sum("plot_plddt" in s for s in pngs) == 1

    assert (tmp_path / "ubiquitin.pdb").read_text().startswith("ATOM")
    assert (tmp_path / "predictions" / "report.html").is_file()
    assert (tmp_path / "predictions" / "insulin_human.pdb").is_file()
