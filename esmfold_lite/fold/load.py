"""``load_model``: any ESMFold checkpoint source → an ``ESMFold`` in eval mode, with its ESM-2 language model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from esmfold_lite.devices import as_device
from esmfold_lite.fold.config import esmfold_config_from_dict
from esmfold_lite.fold.esmfold import ESMFold
from esmfold_lite.fold.precision import resolve_precision
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.lm.load import build_from_state, load_language_model
from esmfold_lite.weights import registry
from esmfold_lite.weights.cast import cast_state_
from esmfold_lite.weights.download import DownloadError, is_cached, locate, url_cache_path
from esmfold_lite.weights.esmfold_format import read_esmfold
from esmfold_lite.weights.safe_pickle import CheckpointError

logger = logging.getLogger(__name__)

DEFAULT_LM = registry.get("esmfold_v1").lm
LM_OPTION = "--lm PATH (Python: load_model(..., lm=PATH))"


def _lm_places_beside(checkpoint: Path, lm_filename: str) -> list[Path]:
    """Where a fair-esm ESMFold file's LM may lie beside it: beside ``checkpoint`` itself and, when ``checkpoint``
    (or a folder above it) is a symlink, beside the file it points to."""
    places = [checkpoint.absolute().with_name(lm_filename)]
    target = checkpoint.resolve().with_name(lm_filename)
    return places if target == places[0] else [*places, target]


def _language_model_for(
    path: Path, lm: str | Path | None, lm_name: str, dtype: torch.dtype, device: torch.device
) -> ESM2:
    """The LM of a fair-esm ESMFold file, in ``dtype`` on ``device``: ``lm`` if given, else the official one
    (``lm_name``) beside the file or beside the file it links to, else the registry's copy in the cache (downloaded
    when missing). The cache's copy is loaded by its registry name also when it is the file beside (the ESMFold
    checkpoint is in the cache too), so that it is checked, and downloaded again if damaged, as every cached
    checkpoint is."""
    if lm is not None:
        return load_language_model(lm, device=device, dtype=dtype)
    info = registry.get(lm_name)
    beside = _lm_places_beside(path, info.filename)
    found = next((place for place in beside if place.is_file()), None)
    if found is not None and found.resolve() != url_cache_path(info.url).resolve():
        return load_language_model(found, device=device, dtype=dtype)
    try:
        return load_language_model(lm_name, device=device, dtype=dtype)
    except DownloadError as exc:
        cache = url_cache_path(info.url)
        places = [*(f"{p} (beside the ESMFold checkpoint)" for p in beside if p != cache), f"{cache} (the cache)"]
        needed = [(f"{info.filename}, the ESM-2 language model", info.url, [*places, f"or pass it with {LM_OPTION}"])]
        raise _missing_weights(f"the language model that {path} needs", exc, needed) from None


def _check_lm_fits(path: Path, trunk_state: dict, language_model: ESM2, lm: str | Path | None) -> None:
    """CheckpointError naming the language model when its shape is not the one the trunk of ``path`` was trained on
    (its layer weights ``esm_s_combine`` and the first ``esm_s_mlp`` LayerNorm give the LM's layers and width)."""
    combine, norm = trunk_state.get("esm_s_combine"), trunk_state.get("esm_s_mlp.0.weight")
    if combine is None or norm is None:
        return  # an incomplete trunk: build_from_state names the missing keys
    layers, width = combine.shape[0] - 1, norm.shape[0]
    if (language_model.num_layers, language_model.embed_dim) != (layers, width):
        given = f"the language model given ({lm})" if lm is not None else "its language model"
        raise CheckpointError(
            f"{given} has {language_model.num_layers} layers of width {language_model.embed_dim}, but {path} was "
            f"trained on an ESM-2 with {layers} layers of width {width} (esmfold_v1: esm2_t36_3B_UR50D)"
        )


def _missing_weights(what: str, reason: DownloadError, needed: list[tuple[str, str, list[str]]]) -> DownloadError:
    """One error naming every file still needed, where to download it, and every place it may go."""
    lines = [
        f"cannot get {what}: {str(reason).splitlines()[0]}",
        "Files still needed (download each elsewhere, e.g. `curl -L -O URL`, and put it in one of its places):",
    ]
    for name, url, places in needed:
        lines += [f"  {name}, from {url}", *(f"    {place}" for place in places)]
    return DownloadError("\n".join(lines), reason.url, reason.dest)


def _locate_esmfold(source: str | Path, info: registry.CheckpointInfo | None, lm: str | Path | None) -> Path:
    """The ESMFold checkpoint file; if a registry one cannot be downloaded, the error lists its LM too (unless
    ``lm`` is given or the LM is already in the cache)."""
    try:
        return locate(source, progress=True)
    except DownloadError as exc:
        if info is None or info.kind != "esmfold":
            raise
        cache = url_cache_path(info.url)
        needed = [(info.filename, info.url, [f"{cache} (the cache)", "or give its path as the model source"])]
        lm_info = registry.get(info.lm)
        if lm is None and not is_cached(lm_info.name):
            lm_places = [f"{url_cache_path(lm_info.url)} (the cache)", "or beside the ESMFold checkpoint",
                         f"or pass it with {LM_OPTION}"]  # fmt: skip
            needed.append((f"{lm_info.filename}, its ESM-2 language model", lm_info.url, lm_places))
        raise _missing_weights(f"the weights of {info.name}", exc, needed) from None


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
            ``esm2_t36_3B_UR50D.pt`` beside the checkpoint (for a symlink: beside the link, else beside the file it
            points to), else the registry's copy in the cache. Refused (CheckpointError) for formats that contain
            their LM.
        device: where to run (default CPU).
        dtype: dtype of the trunk, structure module and heads (default float32), or ``"auto"``: the fastest safe
            dtypes for ``device``, for the LM too unless ``lm_dtype`` is given (``fold.precision``: on a CPU with
            AVX-512, LM float16 and trunk float32).
        lm_dtype: dtype of the language model, or ``"auto"``; default float16 on CUDA (as the original) and
            float32 on CPU (both for ``lm_device``). A half-precision LM runs on the CPU too.
        lm_device: where the language model runs (default: ``device``). ``"cpu"`` with a CUDA ``device`` offloads
            the LM: its weights never take GPU memory; tokens go to the CPU and its layer states come back to the
            GPU (``ESMFold.language_model_states``). Moving the model later with ``.to()`` moves the LM too.

    Weights are converted to their dtype while they are read, one tensor at a time, and tensors already in it stay
    memory-mapped from the checkpoint: loading needs about the model's size in the requested dtypes, never a
    second copy. A mapped checkpoint must not be truncated or rewritten in place while the model is in use.

    Raises:
        CheckpointError: the source or its LM is not a readable checkpoint (the message names the file and the fix).
        DownloadError: a needed file could not be downloaded; the message names every file still needed (the LM
            too) and every place each may go.
        ValueError: ``device`` or ``lm_device`` is not one this machine has (``devices.as_device``).
    """
    device = as_device(device) or torch.device("cpu")
    lm_device = as_device(lm_device) or device
    info = registry.lookup(str(source)) if not Path(source).exists() else None
    if info is not None and info.kind != "esmfold":
        raise CheckpointError(f"{source} is a {info.kind} language model, not ESMFold: use load_language_model")
    path = _locate_esmfold(source, info, lm)
    precision = resolve_precision(device, lm_device, dtype, lm_dtype)
    logger.info("dtypes: %s", precision.describe())
    config_dict, trunk_state, lm_config, lm_state = read_esmfold(path)
    config = esmfold_config_from_dict(config_dict)
    if lm_config is None:
        language_model = _language_model_for(path, lm, info.lm if info else DEFAULT_LM, precision.lm, lm_device)
    elif lm is not None:
        raise CheckpointError(
            f"{path} holds its own language model, so the one given ({lm}) would not be used: drop it"
        )
    else:
        lm_state = cast_state_(lm_state, precision.lm)
        language_model = build_from_state(lambda: ESM2(ESM2Config(**lm_config)), lm_state, path)
    if not isinstance(language_model, ESM2):
        raise CheckpointError(
            f"ESMFold reads an ESM-2 language model, but the one given for {path} is a {type(language_model).__name__}"
            " (ESM-1b/1v or MSA Transformer); pass lm= an esm2_t36_3B_UR50D checkpoint"
        )
    _check_lm_fits(path, trunk_state, language_model, lm)
    state = {
        **cast_state_(trunk_state, precision.trunk),
        **{f"esm.{k}": v for k, v in language_model.state_dict().items()},
    }
    model = build_from_state(lambda: ESMFold(config, language_model), state, path)
    for name, module in model.named_children():
        module.to(device=lm_device if name == "esm" else device)
    model.esm_s_combine.data = model.esm_s_combine.data.to(device=device)
    if model.random_weights:
        logger.warning(
            "%s holds RANDOM WEIGHTS (esmfold-lite weights make-random): its structures are not predictions; every "
            "file written from it says so. Use it to check an install or a set-up, then fold with real weights",
            path,
        )
    return model.eval()
