"""The README opens with the two set-up commands; CI runs the second one verbatim."""

import re
import shlex
from pathlib import Path

from esmfold_lite.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def opening_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    return blocks[:2]


def test_ci_runs_the_readme_test_command_verbatim():
    _, test_command = opening_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
    assert "pytest" in test_command


def test_readme_main_command_is_a_valid_predict_call():
    main_command, _ = opening_commands()
    install, run = (part.strip() for part in main_command.split("&&"))
    assert install.startswith("pip install")
    argv = shlex.split(run)
    assert argv[0] == "esmfold-lite"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "predict"
    assert (ROOT / args.fasta).is_file()


def test_readme_says_how_a_cpu_only_machine_gets_the_cpu_build_of_torch_first():
    text = (ROOT / "README.md").read_text()
    setup = text[: text.index("## How correctness is shown")]  # the set-up section, before anything else
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in setup
    assert 'python -m pytest -q -m "not slow"' in setup and "full command" in setup  # how long each takes
