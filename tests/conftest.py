"""Deterministic property tests: hypothesis draws the same examples on every run. Shared fixtures."""

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> Path:
    """A tiny randomized ESMFold written as the official fair-esm pair (``esmfold_3B_v1.pt`` + its LM beside it)."""
    from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

    esmfold_path, _ = write_fair_esmfold(tiny_hf_esmfold(), tmp_path_factory.mktemp("weights"))
    return esmfold_path
