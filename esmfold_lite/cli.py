"""``esmfold-lite`` command line: one sub-command per module under ``esmfold_lite/commands``.

What every command shares lives here: `CliError` (and the pipeline's ``PipelineError``) for one-line user errors,
the exit codes and the "exit status" paragraph of their ``--help`` (`exit_status_help`), SIGINT/SIGTERM as a clean
stop (`run_interruptibly`: exit status 128 + signal, the warning a command sets as ``args.interrupted``), and
``-q``/``-v`` (`add_logging_options`), which mean the same before the command (``esmfold-lite -v predict ...``) and
after it (``esmfold-lite predict ... -v``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence

from esmfold_lite.pipeline.errors import PipelineError, interruption_of
from esmfold_lite.version import __version__

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func(args) -> int``.
COMMANDS: tuple[str, ...] = ("embed", "evaluate", "weights", "predict", "score_variants", "report", "fold_proteome")

EXIT_OK = 0  # everything asked for was done
EXIT_FAILED = 1  # nothing could run (bad input file, unusable output folder, model not loadable, ...)
EXIT_USAGE = 2  # invalid command line (argparse's own code)
EXIT_SOME_FAILED = 3  # the run went through, but some records failed (each one's reason is in the output table)

VERBOSE_HELP = (
    "more log output (-v esmfold_lite's debug messages, -vv every library's); also accepted before the command"
)
QUIET_HELP = "only warnings and errors; also accepted before the command"


class CliError(Exception):
    """An error to show the user as one line (no traceback), with exit code `EXIT_FAILED`."""


def exit_status_help(
    ok: str,
    failed: str,
    some_failed: str | None = None,
    interrupted: str = "interrupted (SIGINT/SIGTERM)",
    width: int | None = None,
) -> str:
    """The "exit status" paragraph for a command's ``--help`` epilog, in the order 0, 3, 1, 2, 130/143; ``width``:
    wrapped to lines of that many characters (for an epilog argparse prints as written)."""
    codes = [f"{EXIT_OK} {ok}"]
    if some_failed is not None:
        codes.append(f"{EXIT_SOME_FAILED} {some_failed}")
    codes += [f"{EXIT_FAILED} {failed}", f"{EXIT_USAGE} invalid command line", f"130/143 {interrupted}"]
    text = "exit status: " + "; ".join(codes) + "."
    return text if width is None else textwrap.fill(text, width)


INTERRUPTED = "interrupted"
"""The warning of a command stopped by SIGINT/SIGTERM, unless it sets ``args.interrupted`` (what is kept, how to
resume)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program is, so that it unwinds like Ctrl-C (atomic writers remove their
    temporary files on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def run_interruptibly(command: Callable[[], int], interrupted: Callable[[], str] = lambda: INTERRUPTED) -> int:
    """``command()`` with SIGINT and SIGTERM raising `Interrupted`: then the warning ``interrupted()`` is logged and
    128 + the signal returned."""
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return command()
    except BaseException as exc:
        interruption = _interruption(exc)
        if interruption is None:
            raise
        logging.getLogger(__name__).warning(interrupted())
        return 128 + interruption.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interruption(exc: BaseException) -> Interrupted | None:
    """The `Interrupted` that ``exc`` is, or that a C extension wrapped (``pipeline.errors.interruption_of``). Any
    other error raised while unwinding is not an interruption: it propagates with its own message."""
    found = interruption_of(exc)
    return found if isinstance(found, Interrupted) else None


def records_exit_code(failed: int) -> int:
    """Exit code of a run that went through: `EXIT_OK`, or `EXIT_SOME_FAILED` when ``failed`` records failed."""
    return EXIT_SOME_FAILED if failed else EXIT_OK


def at_least(kind: Callable[[str], float], minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: ``kind(text)``, refused below ``minimum`` (and at it unless ``inclusive``)."""

    def parse(text: str) -> float:
        value = kind(text)
        if value < minimum or (value == minimum and not inclusive):
            bound = "at least" if inclusive else "more than"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value: 'x'"
    return parse


def torch_device(text: str) -> str:
    """An argparse ``type`` for ``--device``: a device this machine has (``devices.as_device``), kept as written."""
    from esmfold_lite.devices import as_device

    try:
        as_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def choice_of(module: str, name: str, metavar: str) -> Callable[[str], str]:
    """An argparse ``type`` for a flag whose choices are the tuple ``name`` of ``module``, imported only when a value is
    parsed: the module needs torch or biotite, which ``--help`` does not import. ``metavar``: the value's name in the
    error message (argparse's "invalid metavar value")."""

    def parse(text: str) -> str:
        choices = getattr(importlib.import_module(module), name)
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text

    parse.__name__ = metavar
    return parse


def dtype_name(text: str) -> str:
    """An argparse ``type`` for the dtype flags: a short name (bf16, fp16, half, fp32) as its full one, so that the
    command line takes what ``load_model(dtype=...)`` takes."""
    from esmfold_lite.devices import DTYPE_ALIASES

    return DTYPE_ALIASES.get(text.lower(), text.lower())


def add_nogpu_option(parser: argparse.ArgumentParser, script: str) -> None:
    """fair-esm's ``--nogpu`` (of its ``script``): the same as ``--device cpu``; see `device_after_nogpu`."""
    parser.add_argument(
        "--nogpu", action="store_true", help=f"the same as --device cpu (the flag of fair-esm's {script})"
    )


def device_after_nogpu(args: argparse.Namespace) -> str | None:
    """``args.device``, or "cpu" with ``--nogpu``; ``--nogpu`` with another device is a usage error (exit 2)."""
    if not args.nogpu:
        return args.device
    if args.device not in (None, "cpu"):
        args.parser.error(f"--nogpu means --device cpu, but --device {args.device} is given too; drop one")
    return "cpu"


positive_int = at_least(int, 1)
non_negative_int = at_least(int, 0)
positive_float = at_least(float, 0, inclusive=False)
non_negative_float = at_least(float, 0)


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v``/``--verbose`` and ``-q``/``--quiet`` to a command's parser; `main` adds those before the command."""
    parser.add_argument(
        "-v", "--verbose", dest="command_verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP
    )
    parser.add_argument(
        "-q", "--quiet", dest="command_quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esmfold-lite",
        description="Fold proteins with ESMFold and embed them with the ESM language models (pure PyTorch).",
        epilog="Every command takes -q/-v after its name too; see `esmfold-lite COMMAND --help` for its exit status.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more log output (-v esmfold_lite's debug messages, -vv every library's)",
    )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"esmfold_lite.commands.{name}").register(sub)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command's parser itself as the default ``parser``: usage errors found after parsing (unknown
    flags, contradictions) are reported with the usage of the command given, not the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command_parser in action.choices.values():
                command_parser.set_defaults(parser=command_parser)
                _remember_parsers(command_parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    # -v/-q given after the command count like those before it; commands read args.verbose / args.quiet
    args.verbose += vars(args).pop("command_verbose", 0)
    args.quiet = args.quiet or vars(args).pop("command_quiet", False)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # -v: esmfold_lite's own debug messages (e.g. every trunk pass); -vv: every library's too
    own = logging.DEBUG if args.verbose == 1 and not args.quiet else logging.NOTSET
    logging.getLogger("esmfold_lite").setLevel(own)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(
            run_interruptibly(lambda: args.func(args), lambda: getattr(args, "interrupted", INTERRUPTED)) or EXIT_OK
        )
    except (CliError, PipelineError) as exc:
        logging.getLogger(__name__).debug("%s stopped", args.command, exc_info=exc)  # the traceback only with -v or -vv
        print(f"esmfold-lite {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
