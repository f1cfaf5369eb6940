"""What every ``esmfold-lite`` command shares: --version, -q/-v before or after the command, exit codes in --help."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import subprocess
import sys

import pytest
import torch

import esmfold_lite
from esmfold_lite import cli
from esmfold_lite.cli import build_parser, main


def command_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every sub-command at any depth (``weights list`` included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from command_parsers(sub, (*path, name))


ALL_COMMANDS = [path for path, _ in command_parsers(build_parser())]


def test_every_command_is_covered():
    assert {path[0] for path in ALL_COMMANDS} == {name.replace("_", "-") for name in cli.COMMANDS}
    assert ("weights", "download") in ALL_COMMANDS


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"esmfold-lite {esmfold_lite.__version__}"
    assert esmfold_lite.__version__ == importlib.metadata.version("esmfold-lite")


def test_version_when_run_as_a_program():
    out = subprocess.run([sys.executable, "-m", "esmfold_lite.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"esmfold-lite {esmfold_lite.__version__}"


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_documents_logging_flags_and_exit_status(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "-q, --quiet" in text and "-v, --verbose" in text
    assert "exit status: 0 " in text and "; 1 " in text
    if path[0] in ("embed", "predict", "fold-proteome", "score-variants"):  # commands over many records
        assert "; 3 some" in text


@pytest.fixture
def logging_levels(monkeypatch) -> list[int]:
    """The levels ``main`` configures logging with, one per call."""
    levels: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: levels.append(kwargs["level"]))
    return levels


def _argv(command: str, tmp_path) -> list[str]:
    """A cheap invocation of each command (it may fail after logging is set up: only the level matters here)."""
    missing = str(tmp_path / "missing")
    return {
        "embed": ["embed", missing, "-o", str(tmp_path / "out"), "--model", "m"],
        "evaluate": ["evaluate", missing, missing],
        "weights": ["weights", "list", "--cache-dir", str(tmp_path)],
        "predict": ["predict", missing, "-o", str(tmp_path / "out"), "--model", "m"],
        "report": ["report", missing],
        "fold_proteome": ["fold-proteome", missing, "-o", str(tmp_path / "out"), "--model", "m"],
        "score_variants": ["score-variants", "--model", "m", "--sequence", "MK", "--dms-input", missing,
                           "--dms-output", str(tmp_path / "scores.csv")],
    }[command]


@pytest.mark.parametrize("command", cli.COMMANDS)
@pytest.mark.parametrize(
    ("before", "after", "level"),
    [
        ([], [], logging.INFO),
        (["-q"], [], logging.WARNING),
        ([], ["-q"], logging.WARNING),
        ([], ["--quiet"], logging.WARNING),
        (["-vv"], [], logging.DEBUG),
        ([], ["-vv"], logging.DEBUG),
        ([], ["-v"], logging.INFO),
        (["-v"], ["-v"], logging.DEBUG),  # counted together
        (["-v"], ["-q"], logging.WARNING),  # quiet wins, wherever it is
    ],
)
def test_quiet_and_verbose_mean_the_same_before_and_after_the_command(
    command, before, after, level, tmp_path, logging_levels, capsys
):
    rc = main([*before, *_argv(command, tmp_path), *after])
    assert rc in (0, 1)
    assert logging_levels == [level]
    own = logging.DEBUG if (before + after).count("-v") == 1 and level == logging.INFO else logging.NOTSET
    assert logging.getLogger("esmfold_lite").level == own, "-v: esmfold_lite's own debug messages"


def test_weights_takes_the_flags_at_both_levels(tmp_path, logging_levels, capsys):
    assert main(["weights", "-q", "list", "--cache-dir", str(tmp_path)]) == 0
    assert main(["weights", "list", "-vv", "--cache-dir", str(tmp_path)]) == 0
    assert logging_levels == [logging.WARNING, logging.DEBUG]


def test_exit_codes_are_shared():
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_SOME_FAILED) == (0, 1, 2, 3)
    assert cli.records_exit_code(0) == 0 and cli.records_exit_code(2) == 3
    assert cli.exit_status_help("done", "broken", "partly") == (
        "exit status: 0 done; 3 partly; 1 broken; 2 invalid command line; 130/143 interrupted (SIGINT/SIGTERM)."
    )


def test_run_level_errors_exit_1_and_usage_errors_exit_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "a.pdb"), str(tmp_path / "b.pdb")]) == 1
    assert "esmfold-lite evaluate: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--no-such-flag"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["embed", "in.fasta", "-o", str(tmp_path / "out"), "--model", "m", "--no-such-flag"])
    err = capsys.readouterr().err
    assert "usage: esmfold-lite embed" in err and "unrecognized arguments: --no-such-flag" in err, "the command's usage"
    with pytest.raises(SystemExit):
        main(["weights", "list", "--bogus"])
    assert "usage: esmfold-lite weights list" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("command", ["predict", "embed", "score_variants"])
@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "unknown device 'bogus'; use cpu, cuda, cuda:N or mps"), ("cuda:0", "CUDA is not available")],
)
def test_a_device_this_machine_lacks_is_a_usage_error(command, device, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main([*_argv(command, tmp_path), "--device", device])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --device:" in err and message in err


@pytest.mark.parametrize("loader", [esmfold_lite.load_model, esmfold_lite.load_language_model])
def test_loaders_name_a_missing_device_before_reading_anything(loader, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        loader(tmp_path / "missing.pt", device="gpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        loader(tmp_path / "missing.pt", device="cuda")


def test_dtype_flags_take_the_short_names_python_takes():
    parser = build_parser()
    predict = ["predict", "in.fasta", "-o", "out", "--model", "m"]
    args = parser.parse_args([*predict, "--dtype", "bf16", "--lm-dtype", "FP16"])
    assert (args.dtype, args.lm_dtype) == ("bfloat16", "float16")
    assert parser.parse_args(["embed", "in.fasta", "-o", "o", "--model", "m", "--dtype", "half"]).dtype == "float16"
    with pytest.raises(SystemExit):
        parser.parse_args([*predict, "--dtype", "int8"])
