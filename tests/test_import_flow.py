"""Imports flow one way, checked on the source of every module of the package, function-level imports included:

- no import cycle anywhere (``test_no_import_cycle``);
- ``io/`` is file formats: it reaches only ``io/``, ``geometry/``, the alphabet/sequence rules and the version
  (``IO_MAY_REACH``), so it never reaches a model, the pipeline, viz or the command line;
- nothing inside the package imports the package root ``esmfold_lite`` (it re-exports the public names lazily);
- weights/ reads files into plain configs and state dicts without reaching a model package; lm/ never reaches fold/;
  fold/ never imports io/ or the CLI. For the model packages (``REACHES``) transitively, so lm/ → io/ → fold/ counts
  too. (fold/ may reach io/ through ``prediction`` and lm/, and weights/ uses the generic ``io.atomic`` writer.)

The graph (``imports``): a node per module, a package being its ``__init__``; module → every package module one of
its import statements names, at any depth:

- ``import a.b.c`` and ``from a.b import c`` (``c`` a submodule) import ``a.b.c``; ``from a.b import name`` imports
  ``a.b`` and, when ``a.b``'s ``__init__`` takes ``name`` from a module (a re-export, or a name it resolves lazily
  with ``lazy_names``, which its ``if TYPE_CHECKING:`` block mirrors), that module. So a submodule importing a sibling
  through its package's ``__init__`` does depend on that sibling.
- Importing ``a.b.c`` runs the ``__init__`` of ``a.b`` and of ``a`` first: they count as imported too, except the
  packages the importer itself lies in (their ``__init__`` already runs when it does; so the root, which every
  module lies in, is never reached this way).
- For cycles, imports in an ``if TYPE_CHECKING:`` block are left out: they never run (annotations only). The other
  rules count them: a module whose annotations need a forbidden module depends on it.
"""

import ast
from functools import cache
from pathlib import Path

import pytest

import esmfold_lite

PACKAGE = Path(esmfold_lite.__file__).parent
ROOT = "esmfold_lite"
FORBIDDEN = {  # direct imports
    "weights": ("lm", "fold", "commands", "cli", "pipeline"),
    "lm": ("fold", "commands", "cli", "pipeline"),
    "fold": ("io", "commands", "cli", "pipeline"),
    "esmfold2": ("io", "commands", "cli", "pipeline", "viz"),
    "viz": ("commands", "cli", "pipeline"),  # drawing only: the report reads an OUTDIR through io/, not the pipeline
}
REACHES = {  # transitive
    "weights": ("lm", "fold"),
    "lm": ("fold",),
}
IO_MAY_REACH = ("io", "geometry", "alphabet", "sequences", "version")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and (getattr(test, "id", None) or test.attr) == "TYPE_CHECKING"


def _import_nodes(tree: ast.AST, typing: bool):
    """The Import / ImportFrom nodes of ``tree`` at any depth; those under ``if TYPE_CHECKING:`` only if ``typing``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif _is_type_checking(node) and not typing:
            stack += node.orelse
        else:
            stack += ast.iter_child_nodes(node)


def _base(module: str, node: ast.ImportFrom) -> str:
    """The module ``from X import ...`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


@cache
def origin_of(package: str, name: str) -> str | None:
    """The package module that ``package``'s ``__init__`` takes ``name`` from (``from M import name``), or None."""
    path = MODULES.get(package)
    if path is None or path.name != "__init__.py":
        return None
    for node in _import_nodes(ast.parse(path.read_text()), typing=True):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            base = _base(package, node)
            submodule = f"{base}.{name}"
            return submodule if submodule in MODULES else base if base in MODULES else None
    return None


@cache
def imports(module: str, typing: bool = True) -> frozenset[str]:
    """The package modules ``module`` imports (the rule in this file's docstring)."""
    named = set()
    for node in _import_nodes(ast.parse(MODULES[module].read_text()), typing):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
            continue
        base = _base(module, node)
        named.add(base)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            named.add(submodule if submodule in MODULES else origin_of(base, alias.name) or base)
    found = set()
    for name in named:
        parts = name.split(".")
        for k in range(1, len(parts)):  # the packages whose __init__ runs first
            parent = ".".join(parts[:k])
            if parent in MODULES and not (module == parent or module.startswith(parent + ".")):
                found.add(parent)
        if name in MODULES:
            found.add(name)
    found.discard(module)
    return frozenset(found)


def reached(module: str) -> dict[str, list[str]]:
    """Every package module reached from ``module``, with one import chain that reaches it."""
    chains: dict[str, list[str]] = {}
    stack = [(m, [m]) for m in imports(module)]
    while stack:
        current, chain = stack.pop()
        if current in chains:
            continue
        chains[current] = chain
        stack += [(m, [*chain, m]) for m in imports(current) if m not in chains]
    return chains


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, frozenset[str]], component: list[str]) -> list[str]:
    """A shortest import chain from the component's first module back to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(graph[node] & members):
            if other == start:
                return [*paths[node], start]
            if other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    raise AssertionError(component)


def in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == f"{ROOT}.{p}" or module.startswith(f"{ROOT}.{p}.") for p in packages)


def test_the_graph_reads_the_rule():
    assert "esmfold_lite.viz.view" in imports("esmfold_lite.prediction"), "function-level imports count"
    assert "esmfold_lite.viz" in imports("esmfold_lite.prediction"), "importing viz.view runs viz/__init__"
    assert ROOT not in imports("esmfold_lite.viz.view"), "the packages a module lies in are not imported by it"
    assert "esmfold_lite.pipeline.predict" in imports("esmfold_lite.commands.predict"), "a lazy name's module"
    assert "esmfold_lite.prediction" in imports("esmfold_lite.viz.plots")
    assert "esmfold_lite.prediction" not in imports("esmfold_lite.viz.plots", typing=False), "TYPE_CHECKING only"


def test_no_import_cycle():
    graph = {module: imports(module, typing=False) for module in MODULES}
    cycles = [" → ".join(one_cycle(graph, component)) for component in strongly_connected(graph)]
    assert not cycles, "modules that import one another:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", [m for m in MODULES if in_package(m, ("io",))])
def test_io_is_file_formats_only(module):
    found = [" → ".join([module, *chain]) for m, chain in reached(module).items() if not in_package(m, IO_MAY_REACH)]
    assert not found, "\n".join(found)


def test_nothing_imports_the_package_root():
    found = [module for module in MODULES if module != ROOT and ROOT in imports(module)]
    assert not found, "import the module that defines the name, not esmfold_lite: " + ", ".join(found)


def offenders(package: str, forbidden: tuple[str, ...], transitive: bool) -> list[str]:
    found = []
    for module in [m for m in MODULES if m.startswith(f"{ROOT}.{package}.")]:
        chains = reached(module) if transitive else {m: [m] for m in imports(module)}
        for other, chain in chains.items():
            if in_package(other, forbidden):
                found.append(" → ".join([module, *chain]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_flow(package):
    found = offenders(package, FORBIDDEN[package], transitive=False)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", sorted(REACHES))
def test_model_packages_are_not_reached_indirectly(package):
    found = offenders(package, REACHES[package], transitive=True)
    assert not found, "\n".join(found)
