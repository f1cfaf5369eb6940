import os
import stat

import numpy as np
import pytest

from esmfold_lite.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temp_files


class Boom(Exception):
    pass


def test_write_text_and_bytes(tmp_path):
    target = tmp_path / "a.pdb"
    atomic_write_text(target, "ATOM\r\nEND\n")
    assert target.read_bytes() == b"ATOM\r\nEND\n"  # no newline translation
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["a.pdb"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644


def test_exception_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "b.pdb"
    with pytest.raises(Boom), atomic_path(target) as temp:
        with open(temp, "w") as handle:
            handle.write("ATOM      1  N   MET A   1")  # half a structure
        raise Boom
    assert os.listdir(tmp_path) == []


def test_exception_keeps_old_file(tmp_path):
    target = tmp_path / "c.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("new but incomplete")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["c.json"]


def test_failing_serializer_leaves_nothing(tmp_path):
    class Unencodable:
        def encode(self, encoding):
            raise Boom

    with pytest.raises(Boom):
        atomic_write_text(tmp_path / "d.txt", Unencodable())
    assert os.listdir(tmp_path) == []


def test_libraries_that_pick_format_from_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(tmp_path / "arrays.npz") as temp:
        assert temp.suffix == ".npz" and temp.parent == tmp_path
        np.savez(temp, x=np.arange(3))
    with atomic_path(tmp_path / "plot.png") as temp:
        fig = plt.figure(figsize=(1, 1))
        fig.savefig(temp)
        plt.close(fig)
    assert sorted(os.listdir(tmp_path)) == ["arrays.npz", "plot.png"]
    assert np.load(tmp_path / "arrays.npz")["x"].tolist() == [0, 1, 2]
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_remove_stale_temp_files(tmp_path):
    target = tmp_path / "e.pdb"
    context = atomic_path(target)
    temp = context.__enter__()  # simulate a process killed inside the with block: no __exit__
    temp.write_text("partial")
    keep = ["e2.pdb", ".hidden", "x.tmp", ".a.pdb.0123.tmp.pdb"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    assert remove_stale_temp_files(tmp_path, min_age_s=3600) == []
    assert remove_stale_temp_files(tmp_path) == [temp]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


@pytest.mark.skipif(os.name == "nt", reason="POSIX symlinks")
def test_a_symlink_at_the_target_is_replaced_never_written_through(tmp_path):
    outside = tmp_path / "outside.pdb"
    outside.write_text("keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "to_file.pdb").symlink_to(outside)
    (folder / "dangling.pdb").symlink_to(tmp_path / "nowhere.pdb")
    (folder / "to_dir.pdb").symlink_to(tmp_path)
    for name in ("to_file.pdb", "dangling.pdb", "to_dir.pdb"):
        atomic_write_text(folder / name, "new")
        assert not (folder / name).is_symlink() and (folder / name).read_text() == "new"
    assert outside.read_text() == "keep" and not (tmp_path / "nowhere.pdb").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "outside.pdb"]
