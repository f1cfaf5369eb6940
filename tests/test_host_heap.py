"""``fold.host_heap.kept_heap``: malloc parameters set once (glibc, CPU), freed pages returned after the outermost
pass, the user's own malloc settings and other devices left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from esmfold_lite.fold import host_heap


class FakeLibc:
    def __init__(self):
        self.trims = 0

    def malloc_trim(self, pad):
        self.trims += 1


def test_outermost_exit_returns_free_memory_once(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(host_heap, "_libc", libc)
    with host_heap.kept_heap("cpu"):
        with host_heap.kept_heap(torch.device("cpu")):
            pass
        assert libc.trims == 0  # an inner pass keeps the memory for the outer one
    assert libc.trims == 1


def test_other_devices_are_left_alone(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(host_heap, "_libc", libc)
    with host_heap.kept_heap("meta"):
        pass
    assert libc.trims == 0


def test_trim_also_happens_when_the_pass_fails(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(host_heap, "_libc", libc)
    with pytest.raises(RuntimeError), host_heap.kept_heap("cpu"):
        raise RuntimeError("out of memory")
    assert libc.trims == 1


@pytest.mark.parametrize("setting", ["GLIBC_TUNABLES=glibc.malloc.trim_threshold=0", "MALLOC_TRIM_THRESHOLD_=0"])
def test_user_settings_win(setting):
    key, value = setting.split("=", 1)
    code = "from esmfold_lite.fold import host_heap; print(host_heap._glibc() is None)"
    env = {"PATH": "/usr/bin:/bin", key: value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_parameters():
    code = "from esmfold_lite.fold import host_heap; print(host_heap._glibc() is not None)"
    out = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
