"""``esmfold-lite score-variants``: zero-shot mutation effects for a deep mutational scan or every single mutant.

The flag names are those of fair-esm's ``examples/variant-prediction/predict.py``, so its command lines carry over
(``--model-location`` is accepted for ``--model``, ``--nogpu`` for ``--device cpu``); two defaults differ:
``--offset-idx`` is 1 (positions are 1-based) and ``--scoring-strategy`` is masked-marginals. predict.py's MSA
Transformer flags (``--msa-path``, ``--msa-samples``, ``--lowercase-type``) are not accepted: the MSA Transformer is
not a scorer here.

Every model is checked before any is loaded (`check_model_sources`: it exists or downloads, and its format says it is
a language model that scores single sequences and fits the wild type), so a bad last model of an ensemble fails in
seconds, not after the others have been scored.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from esmfold_lite.cli import (
    EXIT_FAILED,
    CliError,
    add_logging_options,
    add_nogpu_option,
    choice_of,
    device_after_nogpu,
    dtype_name,
    exit_status_help,
    records_exit_code,
    torch_device,
)
from esmfold_lite.io.atomic import atomic_write_bytes
from esmfold_lite.io.dms_table import read_table, widen_header, write_table
from esmfold_lite.io.fasta import read_fasta
from esmfold_lite.io.mutations import Mutation, all_single_mutants, check_wild_type, parse_mutation
from esmfold_lite.sequences import STANDARD_AMINO_ACIDS

log = logging.getLogger(__name__)

ENSEMBLE_COLUMN = "ensemble_mean"
ERROR_COLUMN = "error"
SHOWN_ERRORS = 20  # bad rows logged one by one; the rest are counted (all are in the error column)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score-variants",
        help="zero-shot mutation effects from ESM language models (ESM-1v ensemble, ESM-2, ...)",
        description=(
            "Score mutations of a wild-type sequence with one or more masked language models (Meier et al. 2021). "
            "A score is log p(mutant) - log p(wild type) summed over the mutated positions: higher means the model "
            "favours the mutant. With --dms-input, --dms-output is that CSV with one column per model (named as "
            f"given to --model), '{ENSEMBLE_COLUMN}' (the mean over the models) and '{ERROR_COLUMN}'. A mutation "
            "that is malformed, outside the sequence or does not match its wild-type letter gets empty scores and "
            "the reason in the error column; the others are still scored. With --all-singles, --dms-output lists "
            "every single substitution (columns mutant, position, wt, mt, the model columns and the mean) and a "
            "heatmap of the mean goes beside it as a .png. Files are replaced atomically."
        ),
        epilog=exit_status_help(
            ok="every mutation scored",
            some_failed=f"some mutations could not be scored (their reason is in the '{ERROR_COLUMN}' column)",
            failed="nothing could run (no valid mutation, unreadable input, model not loadable)",
        ),
    )
    parser.add_argument(
        "--model",
        "--model-location",
        dest="models",
        metavar="M",
        nargs="+",
        required=True,
        help="one or more language models: registry names (e.g. esm1v_t33_650M_UR90S_1 ... _5, "
        "esm2_t33_650M_UR50D), fair-esm .pt checkpoints, transformers folders or esmfold-lite model files; "
        "several give an ensemble (loaded one at a time; all are checked, and downloaded when missing, before any "
        "is scored)",
    )
    wild_type = parser.add_mutually_exclusive_group(required=True)
    wild_type.add_argument("--sequence", metavar="SEQ", help="the wild-type sequence the mutations apply to")
    wild_type.add_argument(
        "--fasta", metavar="F", type=Path, help="a FASTA file whose only record is the wild-type sequence"
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--dms-input",
        metavar="CSV",
        type=Path,
        help="CSV (tab-separated if it ends in .tsv) of mutations, e.g. a deep mutational scan; its columns are "
        "kept in the output",
    )
    task.add_argument(
        "--all-singles",
        action="store_true",
        help="score every substitution of every position to the other 19 standard amino acids; writes "
        "--dms-output and a heatmap PNG with the same name ending in .png",
    )
    parser.add_argument(
        "--mutation-col",
        metavar="NAME",
        default="mutant",
        help="column of --dms-input holding mutations like A42G, or A42G:L50P for a multiple mutant (default: mutant)",
    )
    parser.add_argument(
        "--dms-output",
        metavar="CSV",
        type=Path,
        required=True,
        help="output CSV (tab-separated if it ends in .tsv); its folder is created if missing",
    )
    parser.add_argument(
        "--scoring-strategy",
        metavar="STRATEGY",
        type=choice_of("esmfold_lite.lm.variants", "STRATEGIES", "strategy"),
        default="masked-marginals",
        help="wt-marginals: one pass over the wild type; masked-marginals: one pass per mutated position with that "
        "position masked; mutant-marginals: one pass per mutant; pseudo-ppl: pseudo-log-likelihood of the mutant "
        "minus the wild type's, one pass per position of every sequence (slow) (default: masked-marginals)",
    )
    parser.add_argument(
        "--offset-idx",
        metavar="N",
        type=int,
        default=1,
        help="position number of the sequence's first residue in the mutation strings (default: 1; fair-esm's "
        "predict.py defaults to 0)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        metavar="N",
        type=int,
        default=4096,
        help="token budget of one forward pass: count x (sequence length + 2) <= N (default: 4096)",
    )
    parser.add_argument(
        "--device", metavar="D", type=torch_device, default=None,
        help="torch device: cpu, cuda, cuda:1 (default: the loader's choice)",
    )  # fmt: skip
    add_nogpu_option(parser, "variant-prediction/predict.py")
    parser.add_argument(
        "--dtype",
        type=dtype_name,
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="model precision (default: float32); log-probabilities are always taken in float32",
    )
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_tokens_per_batch < 1:
        raise CliError("--max-tokens-per-batch must be a positive number of tokens")
    if len(set(args.models)) < len(args.models):
        raise CliError("a model is given twice to --model; each names one output column")
    args.device = device_after_nogpu(args)
    if args.dms_output.is_dir():  # before any scoring
        raise CliError(f"--dms-output {args.dms_output} is a directory; name a file, e.g. {args.dms_output}/scores.csv")
    wild_type = read_wild_type(args)
    if args.all_singles:
        header, rows = ["mutant", "position", "wt", "mt"], []
        mutations: list[Mutation | None] = list(all_single_mutants(wild_type, args.offset_idx))
        for mutation in mutations:
            (s,) = mutation.substitutions
            rows.append([mutation.text, str(s.index + args.offset_idx), s.wild_type, s.mutant])
        errors: list[str] = [""] * len(rows)
    else:
        try:
            header, rows, lines = read_table(args.dms_input)
        except ValueError as exc:
            raise CliError(f"--dms-input: {exc}") from exc
        if not rows:
            raise CliError(
                f"--dms-input {args.dms_input} holds no mutations: it has a header line but no rows below it"
            )
        header = widen_header(header, rows, lines)
        mutations, errors = parse_column(header, rows, args.mutation_col, wild_type, args.offset_idx, lines)

    valid = [i for i, mutation in enumerate(mutations) if mutation is not None]
    scores: dict[str, np.ndarray] = {}
    if valid:
        sources = check_model_sources(args.models, len(wild_type))
        scores = score_with_models(args, wild_type, [mutations[i] for i in valid], sources)
        scores[ENSEMBLE_COLUMN] = np.mean(list(scores.values()), axis=0)

    columns = [*args.models, ENSEMBLE_COLUMN] + ([] if args.all_singles else [ERROR_COLUMN])
    cells = {column: [""] * len(rows) for column in columns}
    for column, values in scores.items():
        for i, value in zip(valid, values, strict=True):
            cells[column][i] = repr(float(value))
    if not args.all_singles:
        cells[ERROR_COLUMN] = errors
    try:
        args.dms_output.parent.mkdir(parents=True, exist_ok=True)
        write_table(args.dms_output, header, rows, cells)
    except OSError as exc:
        raise CliError(f"--dms-output: cannot write {args.dms_output}: {exc.strerror or exc}") from exc
    log.info("wrote %s (%d mutations)", args.dms_output, len(rows))
    if args.all_singles:
        png = args.dms_output.with_suffix(".png")
        title = f"{args.scoring_strategy}, mean of {len(args.models)} model(s)"
        atomic_write_bytes(png, heatmap_png(wild_type, args.offset_idx, mutations, scores[ENSEMBLE_COLUMN], title))
        log.info("wrote %s", png)
    if not valid:
        log.error("no mutation could be scored; see the %r column of %s", ERROR_COLUMN, args.dms_output)
        return EXIT_FAILED
    if len(valid) < len(rows):
        log.warning("%d of %d mutations could not be scored; see the %r column", len(rows) - len(valid), len(rows),
                    ERROR_COLUMN)  # fmt: skip
    return records_exit_code(len(rows) - len(valid))


def read_wild_type(args: argparse.Namespace) -> str:
    """The checked wild-type sequence from ``--sequence`` or the single record of ``--fasta``."""
    if args.fasta is not None:
        try:
            records = list(read_fasta(args.fasta))
        except OSError as exc:
            raise CliError(f"cannot read {args.fasta}: {exc.strerror or exc}") from exc
        if len(records) != 1:
            raise CliError(f"{args.fasta} holds {len(records)} FASTA records; give a file with the wild type only")
        if records[0].error:
            raise CliError(f"{args.fasta}: {records[0].error}")
        sequence, source = records[0].sequence, f"{args.fasta} ({records[0].id})"
    else:
        sequence, source = args.sequence, "--sequence"
    try:
        return check_wild_type(sequence)
    except ValueError as exc:
        raise CliError(f"{source}: {exc}") from exc


def parse_column(
    header: list[str],
    rows: list[list[str]],
    column: str,
    wild_type: str,
    offset_idx: int,
    lines: list[int] | None = None,
) -> tuple[list[Mutation | None], list[str]]:
    """Each row's parsed mutation (None when it is bad) and error text ('' when it is fine); bad rows are logged by
    their line number in the file (``lines``; default: the header is line 1 and no line is blank)."""
    if column not in header:
        named = ", ".join(name for name in header if name)
        raise CliError(f"--dms-input has no column {column!r} (columns: {named}); set --mutation-col")
    where = header.index(column)
    lines = list(range(2, len(rows) + 2)) if lines is None else lines
    mutations: list[Mutation | None] = []
    errors: list[str] = []
    for line, row in zip(lines, rows, strict=True):
        try:
            mutations.append(parse_mutation(row[where] if where < len(row) else "", wild_type, offset_idx))
            errors.append("")
        except ValueError as exc:
            mutations.append(None)
            errors.append(str(exc))
            if len(errors) - errors.count("") <= SHOWN_ERRORS:
                log.warning("line %d: %s", line, exc)
    bad = len(errors) - errors.count("")
    if bad > SHOWN_ERRORS:
        log.warning("... and %d more bad mutations (see the %r column)", bad - SHOWN_ERRORS, ERROR_COLUMN)
    return mutations, errors


def check_model_sources(sources: list[str], wild_type_length: int) -> dict[str, Path]:
    """Where each model of ``--model`` is, checked before any model is loaded; raises ``CliError`` for the first
    bad one (naming it, and that nothing was scored).

    A registry name or URL is downloaded now when it is not in the cache (so a failed download stops the run before
    the others are scored; an ESMFold or MSA Transformer name is refused without downloading it); a file is read only
    as far as its format shows its kind and config (``weights.language_model.peek_language_model``: a json, a
    safetensors header, a memory-mapped pickle), not its weights, and the model they describe is built on the meta
    device for what it takes (``lm.load.language_model_skeleton``: single sequences, an LM head, ``max_residues``).
    """
    from esmfold_lite.lm.load import language_model_skeleton
    from esmfold_lite.weights import registry
    from esmfold_lite.weights.download import DownloadError, locate
    from esmfold_lite.weights.language_model import peek_language_model

    reads_msas = (
        "is an MSA Transformer, which reads MSAs, not single sequences; score variants with ESM-1v, ESM-1b, ESM-2 or "
        "ESM C"
    )
    located = {}
    for source in sources:
        checked = "(checked before scoring; nothing was scored)"
        info = None if Path(source).expanduser().exists() else registry.lookup(source)
        if info is not None and info.kind == "esmfold":
            raise CliError(f"--model {source} is an ESMFold checkpoint, not a language model {checked}")
        if info is not None and info.kind == "msa":
            raise CliError(f"--model {source} {reads_msas} {checked}")
        try:
            path = locate(source)
            model = language_model_skeleton(*peek_language_model(path), path)
        except (OSError, ValueError, DownloadError) as exc:  # CheckpointError is a ValueError
            raise CliError(f"--model {source}: {exc} {checked}") from exc
        if getattr(model, "takes_msa", False):
            raise CliError(f"--model {source} {reads_msas} {checked}")
        if getattr(model, "lm_head", True) is None:
            raise CliError(
                f"--model {source} has no masked-LM head (e.g. saved from a transformers EsmModel), so it gives no "
                f"logits to score with; use a checkpoint saved with its LM head (EsmForMaskedLM) {checked}"
            )
        max_residues = getattr(model, "max_residues", None)
        if max_residues is not None and wild_type_length > max_residues:
            raise CliError(
                f"{source}: the wild type has {wild_type_length} residues, more than the {max_residues} residues its "
                "learned positions cover; score a window of at most that length around the mutations (with "
                f"--offset-idx set to the number of its first residue), or use ESM-2 (no length limit) {checked}"
            )
        located[source] = path
    return located


def score_with_models(
    args: argparse.Namespace, wild_type: str, mutations: list[Mutation], sources: dict[str, Path] | None = None
) -> dict[str, np.ndarray]:
    """One score array per model, loading each model in turn (an ensemble never sits in memory at once).

    ``sources``: where each model is (`check_model_sources`); by default as given to ``--model``.
    """
    from esmfold_lite.lm.load import load_language_model
    from esmfold_lite.lm.variants import score_mutations

    scores = {}
    for source in args.models:
        try:
            where = (sources or {}).get(source, source)
            model = load_language_model(where, device=args.device, dtype=args.dtype)
        except (OSError, ValueError) as exc:  # checkpoint and download errors name the source and the fix
            raise CliError(str(exc)) from exc
        log.info("scoring %d mutations with %s (%s)", len(mutations), source, args.scoring_strategy)
        try:
            values = score_mutations(
                model,
                wild_type,
                mutations,
                args.scoring_strategy,
                max_tokens_per_batch=args.max_tokens_per_batch,
                progress=not getattr(args, "quiet", False),
                description=Path(source).name,
            )
        except ValueError as exc:  # e.g. a sequence longer than the model's learned positions
            raise CliError(f"{source}: {exc}") from exc
        scores[source] = values.numpy()
        del model
    return scores


def heatmap_png(wild_type: str, offset_idx: int, mutations: list[Mutation], scores: np.ndarray, title: str) -> bytes:
    """Amino acid x position heatmap of single-mutant scores as PNG bytes; wild-type cells are 0 and dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from esmfold_lite.viz.plots import figure_png

    row_of = {aa: r for r, aa in enumerate(STANDARD_AMINO_ACIDS)}
    grid = np.full((len(STANDARD_AMINO_ACIDS), len(wild_type)), np.nan)
    for mutation, score in zip(mutations, scores, strict=True):
        (s,) = mutation.substitutions
        grid[row_of[s.mutant], s.index] = score
    wild_cells = [(index, row_of[aa]) for index, aa in enumerate(wild_type) if aa in row_of]
    for index, row in wild_cells:
        grid[row, index] = 0.0
    limit = float(np.nanmax(np.abs(grid), initial=1e-6))

    fig = Figure(figsize=(min(max(6.0, 2.0 + 0.12 * len(wild_type)), 60.0), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.scatter([i for i, _ in wild_cells], [r for _, r in wild_cells], s=4, color="black", label="wild type")
    step = next(n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if len(wild_type) / n <= 25)
    ticks = list(range(0, len(wild_type), step))
    ax.set_xticks(ticks, [str(i + offset_idx) for i in ticks])
    ax.set_yticks(range(len(STANDARD_AMINO_ACIDS)), list(STANDARD_AMINO_ACIDS))
    ax.set(xlabel="position", ylabel="mutant amino acid", title=title)
    fig.colorbar(image, ax=ax, label="log p(mutant) - log p(wild type)")
    fig.tight_layout()
    return figure_png(fig)
