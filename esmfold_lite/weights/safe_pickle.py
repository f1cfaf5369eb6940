"""Load official ``.pt`` checkpoints without running pickle code.

fair-esm checkpoints are pickles that hold, next to the tensors, an omegaconf ``DictConfig`` (ESM-2, ESMFold) or an
``argparse.Namespace`` (ESM-1b, ESM-1v, MSA Transformer). ``torch.load(weights_only=True)`` refuses those, and
``weights_only=False`` would run whatever callable the file names. Here the unpickler resolves every global through
an allow-list instead: torch's tensor/storage rebuild functions and dtypes, plain builtin containers, numpy scalars,
and stand-ins for the config classes that record their pickled state without importing omegaconf. The result is
then turned into plain Python: configs become ``dict``/``list``, a ``Namespace`` becomes a ``dict``. Any other global
raises :class:`UnsafePickleError` naming it and the file, before anything is called.

A structured omegaconf config (``OmegaConf.structured(ESMFoldConfig(...))``) names its dataclasses, e.g. fair-esm's
``esm.esmfold.v1.trunk.FoldingTrunkConfig``, in its metadata (``object_type``/``ref_type``). Such names, like typing
objects, become inert :class:`ClassName` strings: nothing is imported, and calling one or building an object from it
raises :class:`UnsafePickleError`. The values themselves sit in the config's nodes, as in a plain config.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A file that cannot be read as the checkpoint it was given as; the message names the file and the fix."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would run code or build an unknown object)."""


class _ConfigStandIn:
    """Stand-in for a pickled config object: keeps the state ``BUILD`` gives it; :func:`to_plain` converts it."""

    kind = ""  # "dict" (DictConfig), "list" (ListConfig), "node" (a leaf value), "metadata", "namespace"

    def __new__(cls, *args: Any, **kwargs: Any) -> _ConfigStandIn:
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            merged: dict = {}
            for part in state:
                merged.update(part or {})
            state = merged
        self.state = state if isinstance(state, dict) else {}

    def plain(self) -> Any:
        state = getattr(self, "state", {})
        if self.kind == "namespace":
            return {key: to_plain(value) for key, value in state.items()}
        if self.kind == "node":
            return to_plain(state.get("_val", state.get("_content")))
        if self.kind in ("dict", "list"):
            return to_plain(state.get("_content"))  # None, "???" (missing) and "${...}" interpolations stay strings
        return None


_STAND_INS: dict[str, type[_ConfigStandIn]] = {}


def _stand_in(module: str, name: str, kind: str) -> type[_ConfigStandIn]:
    """The stand-in class for one pickled class name, created on first use."""
    key = f"{module}.{name}"
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_ConfigStandIn,), {"kind": kind})
    return _STAND_INS[key]


class ClassName(str):
    """A class named only as config metadata (``typing.Any``, ``Optional[int]``, fair-esm's config dataclasses),
    kept as its dotted name. It cannot be called: a pickle that tries raises :class:`UnsafePickleError`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(f"refused to call '{self}': config classes are read as metadata, never run")


def _subscript(base: Any, args: Any) -> ClassName:
    """``operator.getitem`` as typing generics pickle it (``Dict[str, Any]``); nothing else is indexed."""
    if not isinstance(base, ClassName):
        raise UnsafePickleError(f"refused global '_operator.getitem' applied to {type(base).__name__}")
    names = args if isinstance(args, tuple) else (args,)
    return ClassName(f"{base}[{', '.join(getattr(a, '__name__', str(a)) for a in names)}]")


def _type_of(obj: Any) -> ClassName:
    """``builtins.type`` as ``type(None)`` pickles; nothing else."""
    if obj is not None:
        raise UnsafePickleError(f"refused global 'builtins.type' applied to {type(obj).__name__}")
    return ClassName("NoneType")


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles store ``bytes``; only the latin-1 codec."""
    normalized = encoding.lower().replace("-", "").replace("_", "") if isinstance(encoding, str) else None
    if normalized not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refused global '_codecs.encode' with codec {encoding!r}")
    return text.encode("latin-1")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for plain numeric dtypes (object scalars are refused)."""
    import numpy

    if not isinstance(dtype, numpy.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"refused numpy scalar of dtype {dtype!r}")
    return numpy.frombuffer(data, dtype=dtype, count=1)[0]


def _tensor_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> torch.Tensor:
    """``torch._tensor._rebuild_from_type_v2`` restricted to plain tensors (Python attributes are dropped)."""
    if new_type not in (torch.Tensor, torch.nn.Parameter) or func not in _TENSOR_REBUILDERS:
        raise UnsafePickleError(f"refused tensor subclass {getattr(new_type, '__name__', new_type)!r}")
    return func(*args)


_TENSOR_REBUILDERS = {
    torch._utils._rebuild_tensor,
    torch._utils._rebuild_tensor_v2,
    torch._utils._rebuild_parameter,
    torch._utils._rebuild_parameter_with_state,
}

_BUILTINS = (dict, list, tuple, set, frozenset, int, float, bool, str, bytes, bytearray, complex)


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {f"builtins.{t.__name__}": t for t in _BUILTINS}
    allowed.update({f"torch._utils.{f.__name__}": f for f in _TENSOR_REBUILDERS})
    allowed.update({f"torch.{n}": getattr(torch, n) for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype)})
    allowed.update(
        {
            "torch._tensor._rebuild_from_type_v2": _tensor_from_type,
            "torch.Size": torch.Size,
            "torch.device": torch.device,
            "collections.OrderedDict": OrderedDict,
            "collections.defaultdict": lambda *factory: {},  # config metadata caches; contents arrive as SETITEMS
            "builtins.type": _type_of,
            "_operator.getitem": _subscript,
            "_codecs.encode": _encode,
            "argparse.Namespace": _stand_in("argparse", "Namespace", "namespace"),
        }
    )
    return allowed


_ALLOWED = _allowed_globals()
_OMEGACONF_KINDS = {"DictConfig": "dict", "ListConfig": "list", "Metadata": "metadata", "ContainerMetadata": "metadata"}


def resolve_global(module: str, name: str) -> Any:
    """The object an allowed pickle global stands for; :class:`UnsafePickleError` for every other global."""
    key = f"{module}.{name}"
    if key in _ALLOWED:
        return _ALLOWED[key]
    if module == "typing" or (module.split(".")[0] == "esm" and name.endswith("Config")):
        return ClassName(key)  # metadata of a (structured) config, e.g. esm.esmfold.v1.trunk.FoldingTrunkConfig
    if module.split(".")[0] == "omegaconf":
        if name in _OMEGACONF_KINDS:
            return _stand_in(module, name, _OMEGACONF_KINDS[name])
        if module == "omegaconf.nodes" and name.endswith("Node"):
            return _stand_in(module, name, "node")
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
        return _numpy_scalar
    if key == "numpy.dtype":
        import numpy

        return numpy.dtype
    raise UnsafePickleError(f"refused to unpickle global '{key}'")


class SafeUnpickler(pickle._Unpickler):
    """Pure-Python unpickler whose globals come from :func:`resolve_global` only.

    ``BUILD`` (setting an object's state, which falls back to ``setattr``) is allowed only on config stand-ins and
    numpy dtypes, so a pickle cannot modify the allowed functions or classes. The pure-Python unpickler is fast
    enough: in torch files the tensor bytes live outside the pickle.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 2 names (``__builtin__.unicode``) as ``pickle`` itself maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return resolve_global(module, name)

    def load_build(self) -> None:
        target, state = self.stack[-2:]  # the stack ends with (object, state)
        if _is_state_dict_metadata(target, state):
            self.stack.pop()  # dropped: module versions for load_state_dict hooks, which esmfold_lite's models lack
            return
        if not isinstance(target, _ConfigStandIn) and not _is_numpy_dtype(target):
            raise UnsafePickleError(f"refused to set the state of a {type(target).__name__} object")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_newobj(self) -> None:
        _require_class(self.stack[-2])  # the stack ends with (class, args)
        super().load_newobj()

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        _require_class(self.stack[-3])  # the stack ends with (class, args, kwargs)
        super().load_newobj_ex()

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def _is_state_dict_metadata(target: Any, state: Any) -> bool:
    """Whether ``BUILD`` would give an ``OrderedDict`` its ``_metadata`` (what ``torch.save(module.state_dict())``
    writes: ``{"_metadata": {module prefix: {"version": ...}}}``) and nothing else."""
    return (
        type(target) is OrderedDict
        and isinstance(state, dict)
        and set(state) == {"_metadata"}
        and isinstance(state["_metadata"], dict)
    )


def _require_class(cls: Any) -> None:
    """``NEWOBJ`` calls ``cls.__new__``: only real classes from the allow-list, never a :class:`ClassName`."""
    if not isinstance(cls, type):
        raise UnsafePickleError(f"refused to create an object of '{cls}': config classes are read as metadata only")


def _is_numpy_dtype(obj: Any) -> bool:
    if not type(obj).__module__.startswith("numpy"):
        return False
    import numpy

    return isinstance(obj, numpy.dtype)


def _load(file: Any, **kwargs: Any) -> Any:
    return SafeUnpickler(file, **kwargs).load()


PICKLE_MODULE = types.SimpleNamespace(Unpickler=SafeUnpickler, load=_load, __name__=__name__)
"""What ``torch.load(..., pickle_module=PICKLE_MODULE)`` needs: ``Unpickler`` and ``load``."""


def to_plain(obj: Any) -> Any:
    """Config stand-ins -> ``dict``/``list``/values, numpy scalars -> Python numbers; tensors untouched."""
    if isinstance(obj, _ConfigStandIn):
        return obj.plain()
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # numpy scalars (np.float64 is a float subclass)
        return obj.item()
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    if isinstance(obj, dict):
        converted = ((to_plain(key), to_plain(value)) for key, value in obj.items())
        return OrderedDict(converted) if isinstance(obj, OrderedDict) else dict(converted)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(to_plain(item) for item in obj)
    return obj


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read a ``torch.save`` file (zip or legacy format) or a plain pickle through the allow-list.

    Returns plain Python objects: tensors, ``dict``/``OrderedDict``/``list``, configs as ``dict``. Zip files are
    memory-mapped, so a large checkpoint's tensors are paged in as they are used.

    Raises:
        UnsafePickleError: the file names a global outside the allow-list (nothing from it was called).
        CheckpointError: the file does not exist or is not a pickle/torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"not a checkpoint: {path} does not exist or is not a file")
    try:
        data = torch.load(
            path,
            map_location=map_location,
            pickle_module=PICKLE_MODULE,
            weights_only=False,  # required with a custom pickle_module; PICKLE_MODULE is the safety
            mmap=zipfile.is_zipfile(path),
        )
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{path}: {exc}. esmfold_lite only loads tensors, plain containers and omegaconf/argparse configs "
            "from .pt files and runs no pickle code; this file holds something else, so it is not an official "
            "ESM/ESMFold checkpoint (or it was modified)."
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(  # the library's own text (an opcode's number, a miniz message) is in the chained error
            f"not a checkpoint: {path} could not be read as a torch .pt file: {_unreadable_reason(path, exc)}"
        ) from exc
    return to_plain(data)


_TEXT_SAMPLE = 256  # bytes looked at to tell a text file


def _unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` could not read ``path`` (it raised ``exc``), in words and with the fix, from what the file
    starts with: empty, a zip archive that is cut short or that ``torch.save`` did not write, a pickle cut short or
    damaged, gzip-compressed, a text file (its first line shown), or none of these."""
    with open(path, "rb") as file:
        head = file.read(_TEXT_SAMPLE)
    again = "download or save it again"
    if not head:
        return f"the file is empty (0 bytes); {again}"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return f"it is a zip archive (the form torch.save writes) that is cut short: its end is missing; {again}"
        if not any(name.endswith("data.pkl") for name in names):
            return "it is a zip archive, but not one torch.save wrote (it holds no data.pkl); pass the checkpoint file"
        return f"it is a torch.save zip archive whose contents are damaged; {again}"
    if head.startswith(b"\x80"):  # a pickle of protocol >= 2, as torch.save's legacy format and pickle.dump write
        cut = isinstance(exc, EOFError) or any(word in str(exc).lower() for word in ("ran out of input", "truncated"))
        return f"it is a pickle that is {'cut short' if cut else 'damaged'}; {again}"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: unpack it first (gunzip FILE) and pass the unpacked file"
    text = _as_text(head)
    if text is not None:
        start = (text.strip().splitlines() or [""])[0][:40]
        return f"it is text (it starts with {start!a}); pass the checkpoint file"
    return "it is neither a zip archive nor a pickle, the two forms of a torch .pt file; pass the checkpoint file"


def _as_text(head: bytes) -> str | None:
    """``head`` as text when it is UTF-8 (a character cut at its end allowed) without control characters other than
    whitespace, else None."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return None
    return text if all(char.isprintable() or char in "\t\n\r\f\v" for char in text) else None
