"""An OUTDIR's file names, the output formats and the defaults of a run, as plain values: the command line's
``--help`` shows them without importing torch (the modules that use them import them from here)."""

from esmfold_lite.io.output_names import FORMATS, REPORT_NAME, REPORT_PARALLEL_FROM, RUN_REPORT_NAME, SUMMARY_NAME

DEFAULT_FORMATS: tuple[str, ...] = ("pdb", "json")
DEFAULT_MAX_TOKENS_PER_BATCH = 1024  # predict: count x longest (linkers included) per batch
DEFAULT_MAX_ATTEMPTS = 3  # fold-proteome: a protein whose worker died this many times is marked failed
DEFAULT_STALL_TIMEOUT_S = 300.0  # fold-proteome: after a lost node, stop when no worker could be scheduled this long
EMBED_FORMATS = ("pt", "npz", "safetensors")  # embed: one file per input (fair-esm's .pt, or .npz), or shards + index
DEFAULT_EMBED_TOKENS_PER_BATCH = 4096  # embed: count x (longest + 2) per forward pass (fair-esm extract.py's)
DEFAULT_SHARD_MIB = 256  # embed --format safetensors: MiB of arrays waiting for a shard before it is written

__all__ = [  # an OUTDIR's file names (defined in io.output_names, which the report reads them from) and the defaults
    "FORMATS", "REPORT_NAME", "REPORT_PARALLEL_FROM", "RUN_REPORT_NAME", "SUMMARY_NAME", "DEFAULT_FORMATS",
    "DEFAULT_MAX_TOKENS_PER_BATCH", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_STALL_TIMEOUT_S", "EMBED_FORMATS",
    "DEFAULT_EMBED_TOKENS_PER_BATCH", "DEFAULT_SHARD_MIB",
]  # fmt: skip
