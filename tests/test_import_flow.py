"""Imports flow one way: weights/ reads files into plain configs and state dicts without importing a model package;
lm/ never imports fold/; fold/ never imports io/ or the CLI. Checked on the source, function-level imports included."""

import ast
from pathlib import Path

import pytest

import esmfold_lite

PACKAGE = Path(esmfold_lite.__file__).parent
FORBIDDEN = {
    "weights": ("lm", "fold", "io", "commands", "cli", "pipeline"),
    "lm": ("fold", "commands", "cli", "pipeline"),
    "fold": ("io", "commands", "cli", "pipeline"),
}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_flow(package):
    offenders = []
    for path in sorted((PACKAGE / package).glob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "esmfold_lite" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                offenders.append(f"{path.name} imports {module}")
    assert not offenders, offenders
