"""``esmfold-lite weights``: list, download and convert the official checkpoints; make a tiny random one."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict
from pathlib import Path

from esmfold_lite.cli import CliError, add_logging_options, dtype_name, exit_status_help
from esmfold_lite.io.atomic import write_failure
from esmfold_lite.weights import registry

CACHE_HELP = (
    f"checkpoint cache folder (default: ${registry.HOME_ENV}, else {registry.DEFAULT_HOME}); files go to "
    "DIR/checkpoints"
)
EXIT_STATUS = exit_status_help(
    ok="done", failed="nothing could be done (unknown name, download failed, checkpoint not readable or not writable)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download and convert official checkpoints; make a tiny random one to check a set-up",
        description="Manage the official ESM / ESMFold checkpoints: list the known names and what is cached, "
        "download them (resumable), and convert a fair-esm .pt, an ESM C .pth or a transformers folder into "
        "esmfold_lite's pickle-free format; write a tiny ESMFold of random weights to check an install or a set-up "
        "(make-random).",
        epilog=EXIT_STATUS,
    )
    add_logging_options(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        help="show the known checkpoints and whether they are cached",
        description="Show every known checkpoint name with its kind, approximate download size, whether it is in "
        "the cache (complete and verified), and what it is.",
        epilog=EXIT_STATUS,
    )
    add_logging_options(listing)
    listing.add_argument("--cache-dir", metavar="DIR", type=Path, default=None, help=CACHE_HELP)
    listing.set_defaults(func=run_list)

    download = actions.add_parser(
        "download",
        help="download checkpoints into the cache",
        description="Download checkpoints into DIR/checkpoints (see --cache-dir), with their contact-regression "
        "file and, for ESMFold, the ESM-2 language model it needs. An interrupted download resumes from its "
        ".part file when run again; files already in the cache are not downloaded again unless they fail their "
        "check (size, SHA-256 and structure), in which case they are downloaded anew.",
        epilog=EXIT_STATUS,
    )
    add_logging_options(download)
    download.add_argument("names", metavar="NAME", nargs="+", help="registry names, see `esmfold-lite weights list`")
    download.add_argument("--cache-dir", metavar="DIR", type=Path, default=None, help=CACHE_HELP)
    download.add_argument(
        "--no-lm", action="store_true", help="for ESMFold names: skip the ESM-2 language model it needs"
    )
    download.set_defaults(func=run_download)

    convert = actions.add_parser(
        "convert",
        help="convert a language-model (ESM-2, ESM-1b/1v, MSA Transformer, ESM C) or ESMFold checkpoint to "
        "esmfold_lite's safetensors + json format",
        description="Read a language-model checkpoint (ESM-2, ESM-1b, ESM-1v, MSA Transformer, ESM C) or an ESMFold "
        "checkpoint (a fair-esm .pt, an official ESM C .pth, a transformers folder, or a registry name) and write "
        "OUT.safetensors + OUT.json "
        "(or model.safetensors + model.json when OUT is an existing folder). The result loads without unpickling "
        "anything. A language-model .pt takes its contact-regression file from beside it; a fair-esm ESMFold .pt "
        "needs its ESM-2 language model (see --lm), which is stored inside the converted ESMFold checkpoint.",
        epilog=EXIT_STATUS,
    )
    add_logging_options(convert)
    convert.add_argument(
        "input", metavar="IN", help="checkpoint to convert: .pt / ESM C .pth file, transformers folder or name"
    )
    convert.add_argument("output", metavar="OUT", type=Path, help="output stem (OUT.safetensors + OUT.json) or folder")
    convert.add_argument(
        "--lm",
        metavar="SOURCE",
        default=None,
        help="fair-esm ESMFold .pt only: its ESM-2 language model (path or registry name); default: "
        "esm2_t36_3B_UR50D.pt beside IN, else the registry copy in the cache (downloaded when missing)",
    )
    convert.add_argument(
        "--dtype",
        type=dtype_name,
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="store the weights in this precision (default: a language model keeps the precision IN stores; "
        "ESMFold is stored in float32)",
    )
    convert.set_defaults(func=run_convert)

    make_random = actions.add_parser(
        "make-random",
        help="write a tiny ESMFold of random weights (official format) to check an install or a set-up",
        description="Write a tiny ESMFold with every weight random, in the official fair-esm format: "
        "DIR/esmfold_3B_v1.pt with its ESM-2 language model DIR/esm2_t36_3B_UR50D.pt (and its contact regression) "
        "beside it, about 0.6 MB. It folds in seconds on a CPU, through every step real weights go through (loading, "
        "batching, chunking, all output formats, the report, resume, fold-proteome on Ray), so an install, a cluster "
        "or a batch pipeline can be checked before the 8.4 GB download. Its structures are noise: every output says "
        "so (REMARK 250 in PDB, the mmCIF title and _pdbx_database_remark, random_weights: true in the JSON, a "
        "banner in the report, a warning when it is loaded), and esmfold-lite weights convert keeps the mark.",
        epilog=EXIT_STATUS,
    )
    add_logging_options(make_random)
    make_random.add_argument("dir", metavar="DIR", type=Path, help="folder to write into (created if missing)")
    make_random.add_argument(
        "--seed", metavar="N", type=int, default=0, help="the same seed writes the same weights (default: 0)"
    )
    make_random.set_defaults(func=run_make_random)


def run_list(args: argparse.Namespace) -> int:
    from esmfold_lite.weights.download import cache_dir, is_cached

    print(f"cache: {cache_dir(args.cache_dir) / 'checkpoints'}")
    print(f"{'name':28} {'kind':8} {'size (approx)':>13}  {'cached':6}  description")
    for info in registry.CHECKPOINTS.values():
        cached = "yes" if is_cached(info.name, args.cache_dir) else "no"
        print(f"{info.name:28} {info.kind:8} {f'~{info.approx_size_gb:g} GB':>13}  {cached:6}  {info.description}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from esmfold_lite.weights.download import DownloadError, fetch

    unknown = [name for name in args.names if registry.lookup(name) is None]
    if unknown:
        raise CliError(f"unknown checkpoint name(s) {', '.join(unknown)}; see `esmfold-lite weights list`")
    names = []
    for name in args.names:
        info = registry.get(name)
        names.append(info.name)
        if info.lm and not args.no_lm:
            names.append(info.lm)
    for name in dict.fromkeys(names):
        try:
            path = fetch(name, args.cache_dir, progress=not args.quiet)
        except DownloadError as exc:
            raise CliError(str(exc)) from None
        print(f"{name}: {path}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from esmfold_lite.devices import as_dtype
    from esmfold_lite.fold.load import load_model
    from esmfold_lite.lm.load import build_language_model
    from esmfold_lite.weights.download import DownloadError, locate
    from esmfold_lite.weights.esm2_format import checkpoint_kind_at
    from esmfold_lite.weights.esmfold_format import save_esmfold
    from esmfold_lite.weights.language_model import read_language_model
    from esmfold_lite.weights.own_format import save_own_format
    from esmfold_lite.weights.safe_pickle import CheckpointError

    try:
        path = locate(args.input)
        if checkpoint_kind_at(path) == "esmfold":
            model, kind = load_model(args.input, lm=args.lm), "esmfold"
        else:
            if args.lm is not None:
                raise CliError(f"--lm is for ESMFold checkpoints only; {args.input} is a language model")
            checkpoint = read_language_model(path)
            model, kind = build_language_model(checkpoint, path), checkpoint.kind
    except (CheckpointError, DownloadError) as exc:
        raise CliError(str(exc)) from None
    if args.dtype:
        model.to(as_dtype(args.dtype))
    if kind == "esmfold":
        stem = save_esmfold(model, args.output)
    else:
        stem = save_own_format(args.output, kind, asdict(model.config), model.state_dict())
    print(f"wrote {stem.with_suffix('.safetensors')} and {stem.with_suffix('.json')}")
    return 0


def run_make_random(args: argparse.Namespace) -> int:
    from esmfold_lite.fold.random_model import write_random_esmfold

    try:
        esmfold_path, lm_path = write_random_esmfold(args.dir, args.seed)
    except OSError as exc:
        raise CliError(write_failure(exc.filename or args.dir, exc)) from None
    print(f"wrote {esmfold_path} and {lm_path} (RANDOM WEIGHTS: its structures are not predictions)")
    print("fold with it (INPUT.fasta: any FASTA file, e.g. examples/proteins.fasta of the repository):")
    print(f"  esmfold-lite predict INPUT.fasta -o OUTDIR --model {shlex.quote(str(esmfold_path))}")
    return 0
