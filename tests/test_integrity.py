"""Structural completeness checks of checkpoint files: zip and legacy torch.save files and safetensors, whole, cut
short, extended and spliced."""

import os

import pytest
import torch
from safetensors.torch import save_file

from esmfold_lite.weights.integrity import structure_problem


def state(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(5000, generator=generator), "b": torch.randn(300, generator=generator).half()}


def write(tmp_path, kind: str, seed: int = 0):
    path = tmp_path / f"{kind}-{seed}.bin"
    if kind == "safetensors":
        save_file(state(seed), path)
    else:
        torch.save({"model": state(seed), "cfg": {"x": 1}}, path, _use_new_zipfile_serialization=kind == "zip")
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_whole_file_passes_and_cut_or_extended_fails(tmp_path, kind):
    path = write(tmp_path, kind)
    data = path.read_bytes()
    assert structure_problem(path) is None and structure_problem(path, deep=True) is None
    for cut in (len(data) - 1, len(data) - 4000, len(data) // 2, 100, 5):
        path.write_bytes(data[:cut])
        assert structure_problem(path) is not None, cut
    path.write_bytes(data + b"\0" * 7)
    assert structure_problem(path) is not None


def test_spliced_zip_fails_the_deep_check(tmp_path):
    one, other = write(tmp_path, "zip", 0).read_bytes(), write(tmp_path, "zip", 1).read_bytes()
    middle = len(one) // 2
    path = tmp_path / "spliced.pt"
    path.write_bytes(one[:middle] + other[middle : middle + 1000] + one[middle + 1000 :])
    assert structure_problem(path) is None  # the directory and headers are intact ...
    assert "CRC" in structure_problem(path, deep=True)  # ... the member contents are not


def test_legacy_storage_header_mismatch_fails(tmp_path):
    path = write(tmp_path, "legacy")
    data = bytearray(path.read_bytes())
    header = data.rindex((300).to_bytes(8, "little"))  # the element count before the float16 storage
    data[header] += 1
    path.write_bytes(bytes(data))
    assert "records 301 elements where 300 are expected" in structure_problem(path)


def test_other_files_are_not_checkpoints(tmp_path):
    path = tmp_path / "page.pt"
    path.write_text("<html>Service unavailable</html>")
    assert "not a zip, legacy torch or safetensors file" in structure_problem(path)
    path.write_bytes(b"")
    assert structure_problem(path) is not None


def test_legacy_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": state(), "x": Evil()}, path, _use_new_zipfile_serialization=False)
    assert "refused to unpickle global" in structure_problem(path)
    assert not marker.exists()
