"""The package's version, importing nothing: the modules that record it (run settings, ModelCIF, embeddings) take
it from here, the package root re-exports it. It equals ``pyproject.toml``'s version (``tests/test_cli.py``)."""

__version__ = "0.1.0"
