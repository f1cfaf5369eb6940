"""The allow-list unpickler: official-style checkpoints load into plain Python, anything executable is refused."""

import argparse
import copyreg
import gzip
import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from fair_esm_configs import registered_at
from omegaconf import OmegaConf

from esmfold_lite.weights.safe_pickle import CheckpointError, SafeUnpickler, UnsafePickleError, load_checkpoint


class WritesMarker:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def state_dict() -> OrderedDict:
    generator = torch.Generator().manual_seed(0)
    return OrderedDict(
        [
            ("encoder.sentence_encoder.embed_tokens.weight", torch.randn(33, 8, generator=generator)),
            ("encoder.lm_head.bias", torch.randn(33, generator=generator).half()),
            ("param", torch.nn.Parameter(torch.randn(2, 3, generator=generator))),
        ]
    )


def assert_same_state(loaded, original):
    assert type(loaded) is OrderedDict and list(loaded) == list(original)
    for key in original:
        assert loaded[key].dtype == original[key].dtype
        assert torch.equal(loaded[key], original[key])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_omegaconf_cfg_becomes_plain_dicts(tmp_path, zip_format):
    model_cfg = {
        "encoder_layers": 2,
        "encoder_embed_dim": 8,
        "token_dropout": True,
        "dropout": 0.1,
        "arch": "esm2",
        "layers_list": [1, 2.5, "x", None, {"nested": [True]}],
        "interpolated": "${encoder_layers}",
        "missing": "???",
        "none": None,
    }
    state = state_dict()
    path = tmp_path / "esm2.pt"
    checkpoint = {
        "cfg": {"model": OmegaConf.create(model_cfg), "task": OmegaConf.create({"name": "mlm"})},
        "model": state,
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_checkpoint(path)
    assert type(loaded["cfg"]["model"]) is dict
    assert loaded["cfg"] == {"model": model_cfg, "task": {"name": "mlm"}}
    assert type(loaded["cfg"]["model"]["layers_list"]) is list
    assert_same_state(loaded["model"], state)


def test_argparse_namespace_and_numpy_scalars_become_plain(tmp_path):
    args = argparse.Namespace(arch="roberta_large", layers=33, lr=np.float64(1e-4), seed=np.int64(7), betas=(0.9, 0.98))
    path = tmp_path / "esm1b.pt"
    state = state_dict()
    torch.save({"args": args, "model": state, "tags": {"a", "b"}, "blob": b"\x00\xff"}, path)
    loaded = load_checkpoint(path)
    assert loaded["args"] == {"arch": "roberta_large", "layers": 33, "lr": 1e-4, "seed": 7, "betas": (0.9, 0.98)}
    assert type(loaded["args"]["lr"]) is float and type(loaded["args"]["seed"]) is int
    assert loaded["tags"] == {"a", "b"} and loaded["blob"] == b"\x00\xff"
    assert_same_state(loaded["model"], state)


def test_malicious_reduce_is_refused_in_zip_and_plain_pickle(tmp_path):
    marker = tmp_path / "marker"
    in_zip = tmp_path / "evil.pt"
    torch.save({"cfg": {}, "model": state_dict(), "payload": WritesMarker(marker)}, in_zip)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps({"payload": WritesMarker(marker)}, protocol=2))
    for path in (in_zip, plain):
        with pytest.raises(UnsafePickleError, match=rf"{path.name}: refused to unpickle global '(posix|nt)\.system'"):
            load_checkpoint(path)
    assert not marker.exists()


def test_setting_state_of_an_allowed_object_is_refused():
    # OrderedDict() then BUILD with {"x": 1}: would setattr on an object that is not a config stand-in
    payload = b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00xK\x01sb."
    with pytest.raises(UnsafePickleError, match="refused to set the state of a OrderedDict"):
        SafeUnpickler(io.BytesIO(payload)).load()


def test_module_state_dict_with_its_metadata_loads(tmp_path):
    # torch.save(module.state_dict()) (ESM C's official files) pickles the OrderedDict's _metadata with BUILD
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    torch.save(module.state_dict(), tmp_path / "state.pth")
    loaded = load_checkpoint(tmp_path / "state.pth")
    assert list(loaded) == list(module.state_dict())
    for key, value in module.state_dict().items():
        assert torch.equal(loaded[key], value)
    assert not hasattr(loaded, "_metadata")  # dropped, never set


def test_state_beyond_a_state_dicts_metadata_is_refused():
    # OrderedDict() then BUILD with {"_metadata": {}, "x": 1}
    payload = b"\x80\x02ccollections\nOrderedDict\n)R}(X\t\x00\x00\x00_metadata}X\x01\x00\x00\x00xK\x01ub."
    with pytest.raises(UnsafePickleError, match="refused to set the state of a OrderedDict"):
        SafeUnpickler(io.BytesIO(payload)).load()


def test_other_globals_and_non_checkpoints_give_clear_errors(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fn": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(UnsafePickleError, match="refused to unpickle global 'torch.nn.modules.linear.Linear'"):
        load_checkpoint(path)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint: .*notes.pt"):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def _damaged(kind: str, whole: bytes, legacy: bytes) -> bytes:
    """The bytes of a damaged or wrong checkpoint file of one ``kind``."""
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("notes.txt", "not torch")
    inside = whole.find(b"\x80", whole.find(b"data.pkl"))  # the pickle of the zip's data.pkl
    return {
        "empty": b"",
        "zip cut short": whole[: len(whole) // 2],
        "zip cut to 62 bytes": whole[:62],
        "zip without data.pkl": other_zip.getvalue(),
        "zip with a damaged data.pkl": whole[:inside] + b"\x00\x01\x02\x03" + whole[inside + 4 :],
        "legacy cut short": legacy[:100],
        "pickle cut short": pickle.dumps({"a": list(range(100))})[:50],
        "FASTA": b">sp|P69905|HBA_HUMAN\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n",
        "HTML error page": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "gzip": gzip.compress(whole),
        "random bytes": bytes(range(7, 200)),
    }[kind]


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("empty", "the file is empty (0 bytes); download or save it again"),
        ("zip cut short", "zip archive (the form torch.save writes) that is cut short"),
        ("zip cut to 62 bytes", "that is cut short: its end is missing"),
        ("zip without data.pkl", "a zip archive, but not one torch.save wrote (it holds no data.pkl)"),
        ("zip with a damaged data.pkl", "a torch.save zip archive whose contents are damaged"),
        ("legacy cut short", "a pickle that is cut short"),
        ("pickle cut short", "a pickle that is cut short"),
        ("FASTA", "it is text (it starts with '>sp|P69905|HBA_HUMAN'); pass the checkpoint file"),
        ("HTML error page", "it is text (it starts with '<!DOCTYPE html>"),
        ("gzip", "gzip-compressed: unpack it first (gunzip FILE)"),
        ("random bytes", "neither a zip archive nor a pickle"),
    ],
)
def test_an_unreadable_file_is_told_in_words_not_by_the_librarys_error(tmp_path, kind, words):
    """What torch.load / zipfile / pickle raise (an opcode as a number such as '(62)', a miniz message, nothing at
    all) stays in the chained exception; the message says what the file is and the fix."""
    torch.save(state_dict(), tmp_path / "whole.pt")
    legacy = io.BytesIO()
    torch.save(state_dict(), legacy, _use_new_zipfile_serialization=False)
    path = tmp_path / f"{kind.replace(' ', '_')}.pt"
    path.write_bytes(_damaged(kind, (tmp_path / "whole.pt").read_bytes(), legacy.getvalue()))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"not a checkpoint: {path} could not be read as a torch .pt file: ") and words in message
    assert not re.search(r"\(\d+\)|\(\)|Error|miniz|PytorchStreamReader|inline_container", message), message


def _touching(marker) -> type:
    """A class named like fair-esm's ``ESMFoldConfig``: building, calling or restoring it creates ``marker``."""

    class ESMFoldConfig:
        def __init__(self, *args):
            marker.touch()

        def __setstate__(self, state):
            marker.touch()

    ESMFoldConfig.__qualname__ = "ESMFoldConfig"
    return ESMFoldConfig


ESM_CLASS_REFUSED = "refused to (call|create an object of) 'esm.esmfold.v1.esmfold.ESMFoldConfig'"


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    "reduce",
    [
        lambda cls: (cls, ("x",)),  # REDUCE: calls the class
        lambda cls: (copyreg.__newobj__, (cls,), {"a": 1}),  # NEWOBJ + BUILD: cls.__new__, then __setstate__
        lambda cls: (copyreg.__newobj_ex__, (cls, (), {}), {"a": 1}),  # NEWOBJ_EX + BUILD (protocol 2: a partial)
    ],
    ids=["reduce", "newobj", "newobj_ex"],
)
def test_esm_class_with_reduce_runs_nothing(tmp_path, reduce, protocol):
    marker = tmp_path / "marker"
    evil = _touching(marker)
    evil.__reduce__ = lambda self: reduce(type(self))
    refused = ESM_CLASS_REFUSED + "|refused to unpickle global 'functools.partial'"
    with registered_at({evil: "esm.esmfold.v1.esmfold"}):
        payload = pickle.dumps({"cfg": {"model": evil.__new__(evil)}}, protocol=protocol)
        assert b"esm.esmfold.v1.esmfold" in payload
        pickle.loads(payload)  # the payload is live: the standard unpickler runs it
        assert marker.exists()
        marker.unlink()
        with pytest.raises(UnsafePickleError, match=refused):
            SafeUnpickler(io.BytesIO(payload)).load()
        path = tmp_path / "evil.pt"
        torch.save({"cfg": {"model": evil.__new__(evil)}, "model": state_dict()}, path, pickle_protocol=protocol)
        with pytest.raises(UnsafePickleError, match=f"evil.pt: ({refused})"):
            load_checkpoint(path)
    assert not marker.exists()


def test_other_esm_globals_are_refused(tmp_path):
    payload = b"\x80\x02cesm.pretrained\nload_model_and_alphabet\nX\x01\x00\x00\x00x\x85R."
    with pytest.raises(UnsafePickleError, match="refused to unpickle global 'esm.pretrained.load_model_and_alphabet'"):
        SafeUnpickler(io.BytesIO(payload)).load()
