"""Imports flow one way: weights/ reads files into plain configs and state dicts without reaching a model package;
lm/ never reaches fold/; fold/ never imports io/ or the CLI. Checked on the source, function-level imports included;
for the model packages (`REACHES`) transitively, so lm/ → io/ → fold/ counts too. (fold/ may reach io/ through
``prediction`` and lm/, and weights/ uses the generic ``io.atomic`` writer.)"""

import ast
from functools import cache
from pathlib import Path

import pytest

import esmfold_lite

PACKAGE = Path(esmfold_lite.__file__).parent
FORBIDDEN = {  # direct imports
    "weights": ("lm", "fold", "commands", "cli", "pipeline"),
    "lm": ("fold", "commands", "cli", "pipeline"),
    "fold": ("io", "commands", "cli", "pipeline"),
}
REACHES = {  # transitive
    "weights": ("lm", "fold"),
    "lm": ("fold",),
}


def source_of(module: str) -> Path | None:
    """The file of an ``esmfold_lite`` module, or None for other modules."""
    parts = module.split(".")
    if parts[0] != "esmfold_lite":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def direct_imports(path: Path) -> frozenset[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    return frozenset(m for m in modules if source_of(m) is not None)


def reached(path: Path) -> dict[str, list[str]]:
    """Every esmfold_lite module reached from ``path``, with one import chain that reaches it."""
    chains: dict[str, list[str]] = {}
    stack = [(m, [m]) for m in direct_imports(path)]
    while stack:
        module, chain = stack.pop()
        if module in chains:
            continue
        chains[module] = chain
        stack += [(m, [*chain, m]) for m in direct_imports(source_of(module)) if m not in chains]
    return chains


def offenders(package: str, forbidden: tuple[str, ...], transitive: bool) -> list[str]:
    found = []
    for path in sorted((PACKAGE / package).glob("*.py")):
        chains = reached(path) if transitive else {m: [m] for m in direct_imports(path)}
        for module, chain in chains.items():
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in forbidden:
                found.append(f"{package}/{path.name} → {' → '.join(chain)}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_flow(package):
    found = offenders(package, FORBIDDEN[package], transitive=False)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", sorted(REACHES))
def test_model_packages_are_not_reached_indirectly(package):
    found = offenders(package, REACHES[package], transitive=True)
    assert not found, "\n".join(found)
