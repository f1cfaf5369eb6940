"""Start-up: ``esmfold-lite --help`` and every command's ``--help`` import neither torch nor a model (they answered
in ~3 s when they did; ~0.3 s now), and ``import esmfold_lite`` resolves its public names on first use. Checked on
``sys.modules`` in a fresh interpreter, not on the clock."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "matplotlib", "biotite", "ray")  # none is needed before a command runs

PRINT_EVERY_HELP = """
import argparse, contextlib, io, json, sys
import esmfold_lite.cli

def helps(parser, argv):
    yield argv
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from helps(sub, [*argv, name])

shown = []
for argv in helps(esmfold_lite.cli.build_parser(), []):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        esmfold_lite.cli.main([*argv, "--help"])
    assert "usage: esmfold-lite" in out.getvalue(), argv
    shown.append(" ".join(argv))
print(json.dumps({"shown": shown, "modules": sorted(sys.modules)}))
"""


def fresh_python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def heavy_in(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_every_help_imports_no_torch():
    result = fresh_python(PRINT_EVERY_HELP)
    commands = {argv.split(" ")[0] for argv in result["shown"] if argv}
    assert {"predict", "embed", "score-variants", "fold-proteome", "report", "weights", "evaluate"} <= commands
    assert "weights make-random" in result["shown"]
    assert heavy_in(result["modules"]) == [], "a command module imports at the top what only its run needs"


def test_import_package_is_light_and_names_resolve_on_first_use():
    code = """
import json, sys
import esmfold_lite
light = sorted(sys.modules)
from esmfold_lite import viz
names = {name: type(getattr(esmfold_lite, name)).__name__ for name in esmfold_lite.__all__}
print(json.dumps({"light": light, "names": names, "dir": dir(esmfold_lite), "viz": viz is esmfold_lite.viz}))
"""
    result = fresh_python(code)
    assert heavy_in(result["light"]) == []
    assert result["names"]["load_model"] == "function" and result["names"]["ESM_ALPHABET"] == "Alphabet"
    assert result["names"]["__version__"] == "str" and result["viz"]
    assert set(result["dir"]) >= {*result["names"], "viz"}


def test_unknown_name_is_an_attribute_error():
    import esmfold_lite

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        esmfold_lite.nope  # noqa: B018


@pytest.mark.parametrize("package", ["esmfold_lite", "esmfold_lite.pipeline"])
def test_every_lazy_name_resolves(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
