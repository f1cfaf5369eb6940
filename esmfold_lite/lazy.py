"""Names of a package resolved on first use (PEP 562), so that importing the package (and the command line's
``--help``) does not import torch or a model: `lazy_names` gives a package's ``__getattr__`` and ``__dir__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    namespace: dict[str, Any], origins: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the module whose ``globals()`` is ``namespace``: a name of ``origins``
    (name -> the module defining it; a submodule of this one names itself) is imported on first use and kept in
    ``namespace``, so later uses are plain attribute reads."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        origin = origins.get(name)
        if origin is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(origin)
        value = module if origin == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*origins, *namespace.get("__all__", ()), *(name for name in namespace if name.startswith("__"))})

    return __getattr__, __dir__
