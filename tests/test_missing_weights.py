"""When ESMFold weights are missing and cannot be downloaded, one error names every file still needed (the ESM-2
LM too) and every place each may go; a symlinked checkpoint finds its LM beside the link or beside its target."""

from __future__ import annotations

import socket

import pytest
import torch
from esmfold_reference import tiny_hf_esmfold, write_fair_esmfold

from esmfold_lite import load_model
from esmfold_lite.cli import main
from esmfold_lite.weights import registry
from esmfold_lite.weights.download import DownloadError
from esmfold_lite.weights.safe_pickle import CheckpointError

ESMFOLD_URL = "http://127.0.0.1:{port}/models/esmfold_3B_v1.pt"
LM_URL = "http://127.0.0.1:{port}/models/esm2_t36_3B_UR50D.pt"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A fair-esm ESMFold file and its LM (official names) in one folder."""
    return write_fair_esmfold(tiny_hf_esmfold(num_blocks=1, sm_blocks=1, seed=3), tmp_path_factory.mktemp("pair"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache and official URLs that point at a port nothing listens on. Yields (cache folder, port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(registry, "MODEL_URL", f"http://127.0.0.1:{port}/models/{{}}.pt")
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "checkpoints", port


def test_registry_name_offline_lists_checkpoint_and_lm_with_their_places(offline):
    cache, port = offline
    with pytest.raises(DownloadError) as error:
        load_model("esmfold_v1")
    message = str(error.value)
    assert message.startswith("cannot get the weights of esmfold_v1: could not download")
    for needed in (f"esmfold_3B_v1.pt, from {ESMFOLD_URL.format(port=port)}", f"{cache / 'esmfold_3B_v1.pt'}",
                   f"esm2_t36_3B_UR50D.pt, its ESM-2 language model, from {LM_URL.format(port=port)}",
                   f"{cache / 'esm2_t36_3B_UR50D.pt'}", "beside the ESMFold checkpoint", "--lm PATH"):  # fmt: skip
        assert needed in message, needed


def test_cli_reports_every_missing_file(offline, tmp_path, capsys):
    cache, _ = offline
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">p\nMKV\n")
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", "esmfold_v1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(cache / "esmfold_3B_v1.pt") in err and str(cache / "esm2_t36_3B_UR50D.pt") in err and "--lm" in err


def test_lm_already_cached_or_given_is_not_listed(offline, pair):
    cache, _ = offline
    cache.mkdir(parents=True)
    (cache / "esm2_t36_3B_UR50D.pt").write_bytes(pair[1].read_bytes())
    for lm in (None, pair[1]):
        with pytest.raises(DownloadError) as error:
            load_model("esmfold_v1", lm=lm)
        assert "esmfold_3B_v1.pt" in str(error.value) and "esm2_t36_3B_UR50D" not in str(error.value)


def test_local_checkpoint_without_its_lm_names_every_place(offline, pair, tmp_path):
    cache, port = offline
    real = tmp_path / "real"
    real.mkdir()
    (real / "esmfold_3B_v1.pt").write_bytes(pair[0].read_bytes())
    link = tmp_path / "links" / "esmfold.pt"
    link.parent.mkdir()
    link.symlink_to(real / "esmfold_3B_v1.pt")
    with pytest.raises(DownloadError) as error:
        load_model(link)
    message = str(error.value)
    assert message.startswith(f"cannot get the language model that {link} needs")
    for place in (tmp_path / "links" / "esm2_t36_3B_UR50D.pt", real / "esm2_t36_3B_UR50D.pt",
                  cache / "esm2_t36_3B_UR50D.pt"):  # fmt: skip
        assert f"    {place} (" in message, place
    assert LM_URL.format(port=port) in message and "--lm PATH" in message
    assert "esmfold_3B_v1.pt," not in message  # the checkpoint itself is there


@pytest.mark.parametrize("lm_beside", ["target", "link"])
def test_symlinked_checkpoint_finds_its_lm(offline, pair, tmp_path, lm_beside):
    esmfold_pt, lm_pt = pair
    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    (real / "esmfold_3B_v1.pt").write_bytes(esmfold_pt.read_bytes())
    for lm_file in (lm_pt, lm_pt.with_name("esm2_t36_3B_UR50D-contact-regression.pt")):
        ((real if lm_beside == "target" else links) / lm_file.name).write_bytes(lm_file.read_bytes())
    (links / "my_model.pt").symlink_to(real / "esmfold_3B_v1.pt")
    expected = load_model(esmfold_pt).fold("MKTAYIAKQR", num_recycles=0)
    got = load_model(links / "my_model.pt").fold("MKTAYIAKQR", num_recycles=0)  # offline: no cache fallback
    assert torch.equal(got.positions, expected.positions)


def test_the_cached_lm_beside_a_cached_checkpoint_is_checked_as_a_cached_file(offline, pair, monkeypatch):
    """In the cache the LM lies beside esmfold_3B_v1.pt; it must still go through the registry's check (a damaged
    cached file is downloaded again), not be loaded as a plain file beside the checkpoint."""
    import esmfold_lite.fold.load as fold_load

    cache, _ = offline
    cache.mkdir(parents=True)
    for file in pair:
        (cache / file.name).write_bytes(file.read_bytes())
    loaded = []
    real = fold_load.load_language_model
    monkeypatch.setattr(fold_load, "load_language_model", lambda source, **kw: loaded.append(source) or real(pair[1]))
    load_model(cache / "esmfold_3B_v1.pt")
    assert loaded == ["esm2_t36_3B_UR50D"]
    loaded.clear()
    load_model(pair[0])  # a checkpoint outside the cache: the file beside it
    assert loaded == [pair[0].with_name("esm2_t36_3B_UR50D.pt")]


def test_a_language_model_of_another_shape_is_named_not_the_checkpoint(pair, tmp_path):
    _, other_lm = write_fair_esmfold(tiny_hf_esmfold(num_blocks=1, sm_blocks=1, lm_layers=3, seed=4), tmp_path)
    with pytest.raises(CheckpointError, match=r"the language model given \(.*\) has 3 layers of width 32, but .* was "
                       r"trained on an ESM-2 with 2 layers of width 32"):  # fmt: skip
        load_model(pair[0], lm=other_lm)
