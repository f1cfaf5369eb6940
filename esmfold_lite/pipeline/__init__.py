"""FASTA → structure files for many proteins, robust to bad records, out-of-memory errors, crashes and reruns.

One pipeline, two drivers: ``predict_fasta`` (``predict.py``) folds in this process; ``fold_proteome``
(``proteome.py``) folds on Ray workers. Both take one ``FoldingOptions`` (``options.py``, checked once) and drive a
``FoldingEngine`` (``engine.py``: sequences in, ``Prediction``s out, its settings recorded for resume; ESMFold's is
``ESMFoldEngine``, ``esmfold_engine.py``) through the same steps, defined once in this package:

- ``run_settings`` (``settings.py``): what makes the numbers (the package version and the engine's settings:
  checkpoint and LM fingerprints, recycles, dtype). An OUTDIR holds results of one set of settings: a run with other
  settings stops with a message, unless ``overwrite`` recomputes (see ``check_settings``).
- ``open_outdir`` (``settings.py``): one run per OUTDIR at a time (a lock); the state that records what is complete
  (``pipeline.run_state``).
- ``plan_record`` (``records.py``): validation, the output name (record ids made safe and unique by
  ``io.fasta.unique_ids``; every file lies directly in OUTDIR, a symlink there is replaced, never written through)
  and whether the protein is already complete; gives a ``ProteinResult`` (error or complete) or a ``FoldJob``.
- ``render_outcome`` (``folded.py``, where the folding ran): a folded job's files rendered in memory, as
  ``FoldedProtein``.
- ``save_folded`` (``folded.py``, in the driver): write the files atomically, then commit each protein's completion
  record (sizes, mtimes, sha256 of its files): a protein is complete only once its record says so. A full or failing
  disk (``io.atomic.is_disk_error``) stops the run with a PipelineError naming the file; the proteins not recorded
  yet stay ``pending`` and are folded by the next run.
- ``RunProgress`` (``progress.py``): a progress bar on a terminal, else one log line per protein; rates, ETA,
  ``OUTDIR/run.json``, and ``summary.tsv`` (one row per protein: ``SUMMARY_COLUMNS``).

``predict_fasta`` batches sequences sorted by length (shortest first) so that ``batch size × longest length`` (the
padded token count, chain linkers included) stays within ``max_tokens_per_batch``; on out-of-memory errors batches
are split, chunk sizes lowered and (``cpu_fallback``) the CPU used, as ``batching.py`` describes.

``embed_fasta`` (``embedding.py``, its outputs ``embedding_outputs.py``) is the embedding run: FASTA records or MSAs
streamed through a language model into one file per input or resumable safetensors shards, plus a manifest.

Errors that stop a run are ``PipelineError`` (``errors.py``). The names below are the package's interface to its
drivers, commands and the report.
"""

from typing import TYPE_CHECKING

from esmfold_lite.lazy import lazy_names

if TYPE_CHECKING:
    from esmfold_lite.pipeline.embedding import EmbedCounts, embed_fasta
    from esmfold_lite.pipeline.engine import FoldingEngine
    from esmfold_lite.pipeline.errors import PipelineError, interruption_of
    from esmfold_lite.pipeline.esmfold_engine import ESMFoldEngine, load_folder
    from esmfold_lite.pipeline.folded import FoldedProtein, render_outcome, save_folded
    from esmfold_lite.pipeline.names import (
        DEFAULT_FORMATS,
        DEFAULT_MAX_TOKENS_PER_BATCH,
        FORMATS,
        RUN_REPORT_NAME,
        SUMMARY_NAME,
    )
    from esmfold_lite.pipeline.options import FoldingOptions
    from esmfold_lite.pipeline.predict import predict_fasta
    from esmfold_lite.pipeline.progress import RunProgress, show_bar
    from esmfold_lite.pipeline.records import (
        ProteinResult,
        output_names,
        pending_row,
        plan_record,
        warn_of_earlier_proteins,
    )
    from esmfold_lite.pipeline.settings import RunSettings, check_settings, open_outdir, run_settings

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_MAX_TOKENS_PER_BATCH",
    "FORMATS",
    "RUN_REPORT_NAME",
    "SUMMARY_NAME",
    "ESMFoldEngine",
    "EmbedCounts",
    "FoldedProtein",
    "FoldingEngine",
    "FoldingOptions",
    "PipelineError",
    "interruption_of",
    "ProteinResult",
    "RunProgress",
    "RunSettings",
    "check_settings",
    "embed_fasta",
    "load_folder",
    "open_outdir",
    "output_names",
    "pending_row",
    "plan_record",
    "predict_fasta",
    "render_outcome",
    "run_settings",
    "save_folded",
    "show_bar",
    "warn_of_earlier_proteins",
]
_ORIGINS = {  # the module of each name, imported on first use: the command line's --help imports no torch
    "embedding": ("EmbedCounts", "embed_fasta"),
    "engine": ("FoldingEngine",),
    "errors": ("PipelineError", "interruption_of"),
    "esmfold_engine": ("ESMFoldEngine", "load_folder"),
    "folded": ("FoldedProtein", "render_outcome", "save_folded"),
    "names": ("DEFAULT_FORMATS", "DEFAULT_MAX_TOKENS_PER_BATCH", "FORMATS", "RUN_REPORT_NAME", "SUMMARY_NAME"),
    "options": ("FoldingOptions",),
    "predict": ("predict_fasta",),
    "progress": ("RunProgress", "show_bar"),
    "records": ("ProteinResult", "output_names", "pending_row", "plan_record", "warn_of_earlier_proteins"),
    "settings": ("RunSettings", "check_settings", "open_outdir", "run_settings"),
}  # fmt: skip
__getattr__, __dir__ = lazy_names(
    globals(), {name: f"{__name__}.{module}" for module, names in _ORIGINS.items() for name in names}
)
