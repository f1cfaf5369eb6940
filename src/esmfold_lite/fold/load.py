"""``load_model``: any ESMFold checkpoint source → an ``ESMFold`` in eval mode, with its ESM-2 language model."""

from __future__ import annotations

from pathlib import Path

import torch

from esmfold_lite.fold.config import esmfold_config_from_dict
from esmfold_lite.fold.esmfold import ESMFold
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.load import as_dtype, build_from_state, load_language_model
from esmfold_lite.weights import registry
from esmfold_lite.weights.download import locate
from esmfold_lite.weights.esmfold_format import read_esmfold
from esmfold_lite.weights.safe_pickle import CheckpointError

DEFAULT_LM = registry.get("esmfold_v1").lm


def _language_model_for(path: Path, lm: str | Path | None) -> ESM2:
    """The LM of a fair-esm ESMFold file: ``lm`` if given, else the official one beside the file or in the cache."""
    if lm is not None:
        return load_language_model(lm)
    beside = path.with_name(registry.get(DEFAULT_LM).filename)
    return load_language_model(beside if beside.is_file() else DEFAULT_LM)


def load_model(
    source: str | Path,
    lm: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    lm_dtype: torch.dtype | str | None = None,
    lm_device: torch.device | str | None = None,
) -> ESMFold:
    """An ESMFold model in eval mode.

    Args:
        source: a registry name (``"esmfold_v1"``: the checkpoint and its LM are downloaded to the cache on first
            use), a fair-esm ESMFold ``.pt`` (``{"cfg": ..., "model": ...}``), a transformers ESMFold folder
            (``config.json`` + weights, LM included) or a checkpoint esmfold_lite wrote (``save_esmfold``).
        lm: the ESM-2 language model for a fair-esm ``.pt`` (path or registry name). By default
            ``esm2_t36_3B_UR50D.pt`` beside the checkpoint, else the registry's copy in the cache. Ignored for
            formats that contain their LM.
        device: where to run (default CPU).
        dtype: dtype of the trunk, structure module and heads (default float32).
        lm_dtype: dtype of the language model; default float16 on CUDA (as the original) and float32 on CPU
            (both for ``lm_device``).
        lm_device: where the language model runs (default: ``device``). ``"cpu"`` with a CUDA ``device`` offloads
            the LM: its weights never take GPU memory; tokens go to the CPU and its layer states come back to the
            GPU (``ESMFold.language_model_states``). Moving the model later with ``.to()`` moves the LM too.

    Raises:
        CheckpointError: the source or its LM is not a readable checkpoint (the message names the file and the fix).
        DownloadError: a registry file could not be downloaded (the message says where to put it by hand).
    """
    path = locate(source, progress=True)
    info = registry.lookup(str(source)) if not Path(source).exists() else None
    if info is not None and info.kind != "esmfold":
        raise CheckpointError(f"{source} is a {info.kind} language model, not ESMFold: use load_language_model")
    config_dict, trunk_state, lm_config, lm_state = read_esmfold(path)
    config = esmfold_config_from_dict(config_dict)
    if lm_config is None:
        language_model = _language_model_for(path, lm if lm is not None else (info.lm if info else None))
    else:
        language_model = build_from_state(lambda: ESM2(ESM2Config(**lm_config)), lm_state, path)
    if not isinstance(language_model, ESM2):
        raise CheckpointError(
            f"ESMFold reads an ESM-2 language model, but the one given for {path} is a {type(language_model).__name__}"
            " (ESM-1b/1v or MSA Transformer); pass lm= an esm2_t36_3B_UR50D checkpoint"
        )
    device = torch.device(device or "cpu")
    lm_device = torch.device(lm_device) if lm_device is not None else device
    lm_dtype = as_dtype(lm_dtype) or (torch.float16 if lm_device.type == "cuda" else torch.float32)
    language_model = language_model.to(device=lm_device, dtype=lm_dtype).eval()

    state = {**trunk_state, **{f"esm.{k}": v for k, v in language_model.state_dict().items()}}
    model = build_from_state(lambda: ESMFold(config, language_model), state, path)
    trunk_dtype = as_dtype(dtype) or torch.float32
    for name, module in model.named_children():  # everything but the LM, which keeps lm_dtype
        if name != "esm":
            module.to(device=device, dtype=trunk_dtype)
    model.esm_s_combine.data = model.esm_s_combine.data.to(device=device, dtype=trunk_dtype)
    return model.eval()
