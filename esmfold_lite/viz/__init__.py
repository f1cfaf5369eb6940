"""See structures: 3D views (py3Dmol), pLDDT and PAE plots (matplotlib), and an HTML report of a predict run.

    from esmfold_lite import viz
    viz.show(pred_or_pdb_path, color="plddt")    # | "chain" | "rainbow"; py3Dmol view
    viz.plot_plddt(pred), viz.plot_pae(pred)      # matplotlib Figures; plot_pae also takes a PAE JSON file
    viz.write_report("predictions")               # predictions/report.html
"""

from esmfold_lite.viz.colors import PLDDT_BANDS
from esmfold_lite.viz.plots import plot_pae, plot_plddt
from esmfold_lite.viz.report import write_report
from esmfold_lite.viz.view import COLOR_MODES, show

__all__ = ["COLOR_MODES", "PLDDT_BANDS", "plot_pae", "plot_plddt", "show", "write_report"]
