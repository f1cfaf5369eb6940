"""``load_language_model``: any language-model checkpoint source -> the model, in eval mode.

``esmfold_lite.weights`` reads a checkpoint into a kind, a config dict and a state dict; this module owns the step
from there to a model: ``LANGUAGE_MODELS`` maps each kind to its model class and config dataclass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from esmfold_lite.cpu_dtypes import warn_if_emulated
from esmfold_lite.devices import as_device, as_dtype
from esmfold_lite.lm.esm1 import ESM1, ESM1Config
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.esmc import ESMC, ESMCConfig
from esmfold_lite.lm.msa_transformer import MSATransformer, MSATransformerConfig
from esmfold_lite.weights import registry
from esmfold_lite.weights.cast import cast_state_
from esmfold_lite.weights.download import locate
from esmfold_lite.weights.language_model import LanguageModelCheckpoint, read_language_model
from esmfold_lite.weights.safe_pickle import CheckpointError

LANGUAGE_MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "esm2": (ESM2, ESM2Config),
    "esm1b": (ESM1, ESM1Config),
    "msa": (MSATransformer, MSATransformerConfig),
    "esmc": (ESMC, ESMCConfig),
}
"""Checkpoint kind (``weights.language_model``) -> (model class, its config dataclass)."""

_SHOWN_KEYS = 5


def _key_list(keys: set[str]) -> str:
    shown = ", ".join(sorted(keys)[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


class _NoInit(TorchFunctionMode):
    """Inside it, ``torch.nn.init``'s initialisers (and ``Tensor.normal_``/``uniform_``) do nothing. For building a
    module on the meta device, whose values all come from a checkpoint afterwards: there they would only compute
    shapes, and ``normal_`` on a meta tensor runs a Python reference implementation whose import pulls in
    ``torch._dynamo`` (about 1.5 s for every process that loads a checkpoint)."""

    SKIPPED_METHODS = (torch.Tensor.normal_, torch.Tensor.uniform_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init" or func in self.SKIPPED_METHODS:
            return args[0] if args else kwargs["tensor"]  # every initialiser takes the tensor first
        return func(*args, **(kwargs or {}))


def on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` built on the meta device without initialising weights: shapes and attributes, no memory."""
    with torch.device("meta"), _NoInit():
        return factory()


def build_from_state(factory: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], source: object) -> nn.Module:
    """``factory()`` built without initialising weights, then given exactly the tensors of ``state``.

    The module is created on the meta device and the checkpoint tensors are assigned, not copied, so no random
    init runs and no second copy of the weights is made. Parameters the module shares (a tied LM head) are
    shared again afterwards. Raises ``CheckpointError`` naming ``source`` on missing/unexpected keys or shapes.
    """
    model = on_meta(factory)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        parts = [f"missing keys: {_key_list(missing)}"] if missing else []
        parts += [f"unexpected keys: {_key_list(unexpected)}"] if unexpected else []
        raise CheckpointError(
            f"the weights in {source} do not fit {type(model).__name__}: {'; '.join(parts)}. The file is not a "
            "complete checkpoint of this model (or not of this model family)"
        )
    shared: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        shared.setdefault(name, first_name.setdefault(id(param), name))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {source} do not fit {type(model).__name__}: {exc}") from None
    for name, original in shared.items():
        if name != original:
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner), leaf, model.get_parameter(original))
    return model


def build_language_model(
    checkpoint: LanguageModelCheckpoint, source: object, dtype: torch.dtype | None = None
) -> nn.Module:
    """The model a checkpoint describes, on the CPU, its floating tensors converted to ``dtype`` one at a time
    (None: as stored). Tensors already in ``dtype`` stay memory-mapped from the file (``weights.cast``).

    A checkpoint without its contact regression (``missing_contact_regression``) gives a model whose contact head
    refuses contacts with that hint (``ContactPredictionHead.has_regression``, ``regression_hint``).
    """
    factory = _language_model_factory(checkpoint.kind, checkpoint.config, source)
    model = build_from_state(factory, cast_state_(checkpoint.state, dtype), source)
    head = getattr(model, "contact_head", None)
    if head is not None and checkpoint.missing_contact_regression is not None:
        head.has_regression = False  # a zero filler: contacts are refused (`contact_head.check_contact_regression`)
        head.regression_hint = checkpoint.missing_contact_regression
    return model


def language_model_skeleton(kind: str, config: Mapping[str, Any], source: object) -> nn.Module:
    """The model of ``kind`` that ``config`` describes (``weights.language_model.peek_language_model``), on the meta
    device: its attributes (``max_residues``, ``takes_msa``, ``lm_head``) without reading or allocating a weight.

    Raises ``CheckpointError`` naming ``source`` when ``config`` does not fit the model's config dataclass.
    """
    return on_meta(_language_model_factory(kind, config, source))


def _language_model_factory(kind: str, config: Mapping[str, Any], source: object) -> Callable[[], nn.Module]:
    model_class, config_class = LANGUAGE_MODELS[kind]
    try:
        model_config = config_class(**config)
    except (TypeError, ValueError) as exc:  # a missing or unknown field, or sizes the config class refuses
        raise CheckpointError(f"the config in {source} does not describe a {model_class.__name__}: {exc}") from None
    return lambda: model_class(model_config)


def load_language_model(
    source: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> nn.Module:
    """An ESM language model in eval mode: ``ESM2``, ``ESM1`` (ESM-1b / ESM-1v), ``MSATransformer`` or ``ESMC``.

    All share fair-esm's ``forward(tokens, repr_layers, need_head_weights, return_contacts)`` and ``embed`` (ESM C
    has no contact head: ``return_contacts=True`` raises).

    Args:
        source: a registry name (``"esm2_t33_650M_UR50D"``, ``"esm1b_t33_650M_UR50S"``,
            ``"esm1v_t33_650M_UR90S_1"`` ... ``_5``, ``"esm_msa1b_t12_100M_UR50S"``, ``"esmc_300m"``,
            ``"esmc_600m"``; downloaded to the cache when missing), a URL, a fair-esm ``.pt`` (its
            ``<stem>-contact-regression.pt`` is read from beside it), an official ESM C ``.pth``, a
            transformers ESM-2 folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) or an
            esmfold_lite ``<stem>.safetensors`` + ``<stem>.json`` pair (``esmfold-lite weights convert`` writes those).
        device: where to put the model (default CPU).
        dtype: floating dtype of the parameters (default float32, whatever the checkpoint stores). Weights are
            converted while they are read, so loading needs about the model's size in ``dtype``, not the file's
            size on top of it.

    Raises:
        CheckpointError: ``source`` is not a readable language-model checkpoint (the message names it and the fix).
        DownloadError: a registry name or URL that could not be downloaded (the message says where to put the file).
        ValueError: ``device`` is not one this machine has (``devices.as_device``), or ``dtype`` is unknown.
    """
    device = as_device(device)
    info = None if Path(source).expanduser().exists() else registry.lookup(str(source))
    if info is not None and info.kind == "esmfold":
        raise CheckpointError(
            f"{source} is not an ESM-2 / ESM-1b / ESM-1v / MSA Transformer / ESM C language model but a folding "
            "model: load it with esmfold_lite.load_model"
        )
    path = locate(source)
    dtype = as_dtype(dtype) or torch.float32
    warn_if_emulated(dtype, device)
    model = build_language_model(read_language_model(path), path, dtype)
    return model.to(device=device).eval()
