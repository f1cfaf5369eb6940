"""fair-esm ESMFold checkpoints whose cfg is a structured omegaconf config (``OmegaConf.structured(ESMFoldConfig())``)
load exactly like the plain form, without omegaconf or fair-esm, and run nothing from the pickle."""

from __future__ import annotations

import os
import pickletools
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.fold.config import esmfold_config_from_dict
from esmfold_lite.weights.esmfold_format import read_esmfold
from esmfold_lite.weights.safe_pickle import load_checkpoint

FAIR_ESM_CLASSES = {
    "esm.esmfold.v1.esmfold ESMFoldConfig",
    "esm.esmfold.v1.trunk FoldingTrunkConfig",
    "esm.esmfold.v1.trunk StructureModuleConfig",
}
SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQ"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """The same randomized model written twice: plain cfg and structured cfg (each with its LM beside it)."""
    reference = tiny_hf_esmfold(num_blocks=2, sm_blocks=2, max_recycles=2, seed=11)
    plain, _ = write_fair_esmfold(reference, tmp_path_factory.mktemp("plain"))
    structured, _ = write_fair_esmfold(reference, tmp_path_factory.mktemp("structured"), structured=True)
    return plain, structured


def _pickled_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_structured_file_names_fair_esm_classes(pairs):
    plain, structured = pairs
    assert FAIR_ESM_CLASSES <= _pickled_globals(structured)
    assert not any(name.startswith("esm.") for name in _pickled_globals(plain))


def test_structured_cfg_reads_as_the_plain_dict(pairs):
    plain, structured = pairs
    plain_cfg = load_checkpoint(plain)["cfg"]["model"]
    structured_cfg = load_checkpoint(structured)["cfg"]["model"]
    assert type(structured_cfg) is dict and type(structured_cfg["trunk"]["structure_module"]) is dict
    plain_cfg.pop("_name")  # the plain test cfg carries the class name as a value; the structured one as metadata
    assert structured_cfg["trunk"].pop("_name") == "FoldingTrunkConfig"
    assert structured_cfg == plain_cfg
    assert esmfold_config_from_dict(read_esmfold(structured)[0]) == esmfold_config_from_dict(read_esmfold(plain)[0])


def test_structured_pair_gives_bit_identical_outputs(pairs):
    plain, structured = pairs
    expected = load_model(plain).fold(SEQUENCE, num_recycles=1)
    got = load_model(structured).fold(SEQUENCE, num_recycles=1)
    for field in ("positions", "plddt", "ptm", "pae"):
        assert torch.equal(getattr(got, field), getattr(expected, field)), field


BLOCKED_IMPORTS = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("omegaconf", "esm"):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Block())
    for name in [m for m in sys.modules if m.split(".")[0] in ("omegaconf", "esm")]:
        del sys.modules[name]
    """
)


def test_loads_with_omegaconf_and_fair_esm_blocked(pairs):
    plain, structured = pairs
    script = BLOCKED_IMPORTS + textwrap.dedent(
        f"""
        import torch
        from esmfold_lite import load_model
        try:
            import omegaconf  # noqa
            raise SystemExit("omegaconf was importable")
        except ImportError:
            pass
        folds = [load_model(path).fold({SEQUENCE!r}, num_recycles=0) for path in ({str(plain)!r}, {str(structured)!r})]
        assert torch.equal(folds[0].positions, folds[1].positions)
        assert torch.equal(folds[0].ptm, folds[1].ptm)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("omegaconf", "esm"))
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
