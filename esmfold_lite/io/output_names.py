"""The names of what the commands write: structure-output suffixes, an OUTDIR's own files (summary, run report, HTML
report), the arrays ``embed`` saves, the contact-map PNG.

Plain strings and ``output_paths`` (where a protein's files go), importing nothing but the standard library, so
that the command line's ``--help`` shows them without importing torch; the writers (``pipeline.outputs``,
``pipeline.embedding_shards``, ``pipeline.embedding_outputs``) and the report (``viz.report``, which reads an OUTDIR
and never imports the pipeline) import them from here.
"""

import os
from collections.abc import Sequence
from pathlib import Path

FORMAT_SUFFIXES: dict[str, str] = {
    "pdb": ".pdb", "cif": ".cif", "json": ".json", "pae": "_predicted_aligned_error_v1.json", "npz": ".npz",
    "png": ".png",
}  # fmt: skip
FORMATS: tuple[str, ...] = tuple(FORMAT_SUFFIXES)
SUMMARY_NAME = "summary.tsv"
RUN_REPORT_NAME = "run.json"
REPORT_NAME = "report.html"  # ``esmfold-lite report`` (viz.report)
REPORT_PARALLEL_FROM = 32  # proteins: the report reads fewer in its own process (starting workers costs seconds)
CONTACTS_PNG_SUFFIX = ".contacts.png"  # embed --contacts-png: OUTDIR/<name>.contacts.png
INCLUDES = ("mean", "per_tok", "bos", "contacts")  # fair-esm extract.py's --include choices
DEFAULT_INCLUDE = ("mean", "per_tok", "bos")  # contacts with --contacts


def output_paths(outdir: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    """Where the files of protein ``name`` go: ``{format: OUTDIR/<name><suffix>}`` (``FORMAT_SUFFIXES``).

    ``name`` should come from ``unique_ids``; raises ValueError unless it is one plain path component, so that every
    path lies directly in ``outdir``. The last component is not resolved: a symlink there is replaced, not followed.
    """
    if not name or name in (".", "..") or "\0" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"output name {name!r} is not a plain file name")
    return {fmt: outdir / f"{name}{FORMAT_SUFFIXES[fmt]}" for fmt in formats}
