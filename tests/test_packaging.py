"""The installed package wins over a folder named like it, and environment.yml installs what exists."""

import os
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_import_from_the_folder_holding_a_clone_named_esmfold_lite(tmp_path):
    # `git clone …/esmfold_lite` then `python` beside it: the clone must not shadow the package as a namespace.
    (tmp_path / "esmfold_lite").symlink_to(ROOT, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import esmfold_lite, sys; print(esmfold_lite.__file__); print(callable(esmfold_lite.load_model))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, has_loader = out.stdout.split()
    assert has_loader == "True"
    assert Path(path).resolve() == (ROOT / "esmfold_lite" / "__init__.py").resolve()


def test_environment_yml_names_conda_forge_pytorch_and_existing_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.split(">")[0].split("=")[0] == "pytorch" for d in conda)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    extras = pip[-1].split("[", 1)[1].rstrip("]").split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "test" in extras and set(extras) <= set(declared)
    assert not any(line.startswith("torch") for line in pip), "torch comes from conda-forge, not pip"
