"""ESM-2 checkpoints in their three formats -> ``(config dict, state dict in ESM2's key names)``.

The config dict holds the fields of ``esmfold_lite.lm.esm2.ESM2Config`` (``num_layers``, ``embed_dim``,
``attention_heads``, ``token_dropout``, ``lm_head``); ``esmfold_lite.lm.load`` builds the model from it. Nothing here
imports a model.

* fair-esm ``.pt``: ``{"cfg": {"model": {encoder_layers, encoder_embed_dim, encoder_attention_heads,
  token_dropout, ...}}, "model": state}`` with keys prefixed ``encoder.sentence_encoder.`` (the LM head:
  ``encoder.``), plus the separate ``<stem>-contact-regression.pt`` beside it (``{"model": {contact_head...}}``).
* transformers folder: ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` (or their sharded
  ``*.index.json``), keys ``esm.encoder.layer.N.attention.self.query.weight`` etc. (``esm.`` optional, as
  ``EsmModel`` saves them; ``lm_head.*`` from ``EsmForMaskedLM``; without those the model has no LM head).
* esmfold_lite's own ``<stem>.safetensors`` + ``<stem>.json`` (see ``own_format``).

A missing contact regression is filled with zeros and warned about (the model still embeds; contacts are
meaningless, and the model refuses them: `contact_regression_missing` tells the filler, and each format has its hint on
where the regression comes from, e.g. `fair_regression_hint`); a missing ``lm_head.weight`` is the token embedding it is
tied to.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from esmfold_lite.weights.config_check import (
    check_config,
    config_problems,
    refuse_config,
    safetensors_shapes,
    state_shapes,
)
from esmfold_lite.weights.own_format import own_format_kind, save_own_format
from esmfold_lite.weights.renames import RenameTable
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

State = dict[str, torch.Tensor]
Config = dict[str, Any]

FAIR_PREFIXES = ("encoder.sentence_encoder.", "encoder.")
CONTACT_KEYS = ("contact_head.regression.weight", "contact_head.regression.bias")
DROPPED_SUFFIXES = ("rot_emb.inv_freq", "rotary_embeddings.inv_freq", "embeddings.position_ids")
"""Buffers some formats store that are recomputed here (rotary frequencies, position ids)."""

HF_MODULES = RenameTable(
    (
        ("layers.{n}.self_attn.q_proj", "encoder.layer.{n}.attention.self.query"),
        ("layers.{n}.self_attn.k_proj", "encoder.layer.{n}.attention.self.key"),
        ("layers.{n}.self_attn.v_proj", "encoder.layer.{n}.attention.self.value"),
        ("layers.{n}.self_attn.out_proj", "encoder.layer.{n}.attention.output.dense"),
        ("layers.{n}.self_attn_layer_norm", "encoder.layer.{n}.attention.LayerNorm"),
        ("layers.{n}.fc1", "encoder.layer.{n}.intermediate.dense"),
        ("layers.{n}.fc2", "encoder.layer.{n}.output.dense"),
        ("layers.{n}.final_layer_norm", "encoder.layer.{n}.LayerNorm"),
        ("embed_tokens", "embeddings.word_embeddings"),
        ("emb_layer_norm_after", "encoder.emb_layer_norm_after"),
        ("contact_head.regression", "contact_head.regression"),
    )
)
"""ESM2 module path <-> transformers' (without its optional ``esm.``); the LM head is named alike but for its tied
projection (``lm_head.weight`` <-> ``lm_head.decoder.weight``)."""
_HF_LEAVES = {"gamma": "weight", "beta": "bias"}  # old transformers LayerNorm names
FAIR_CONFIG_FIELDS = {"num_layers": "encoder_layers", "embed_dim": "encoder_embed_dim",
                      "attention_heads": "encoder_attention_heads"}  # fmt: skip
"""``ESM2Config`` field -> its name in a fair-esm ESM-2 ``cfg["model"]``."""
HF_CONFIG_FIELDS = {"num_layers": "num_hidden_layers", "embed_dim": "hidden_size",
                    "attention_heads": "num_attention_heads"}  # fmt: skip
"""``ESM2Config`` field -> its name in a transformers ``config.json``."""


def hf_to_esm2_key(key: str) -> str | None:
    """A transformers ESM key -> the ESM2 key; ``None`` for buffers/pooler weights ESM2 does not have.

    ``esm.encoder.layer.3.attention.self.query.weight`` -> ``layers.3.self_attn.q_proj.weight``,
    ``lm_head.decoder.weight`` -> ``lm_head.weight``. The ``esm.`` prefix is optional. Keys that are not part of an
    ESM-2 model come back unchanged, so a strict load reports them.
    """
    if key.endswith(DROPPED_SUFFIXES) or key.startswith(("pooler.", "esm.pooler.")):
        return None
    if key.startswith("lm_head."):
        module, _, leaf = key.rpartition(".")
        return "lm_head.weight" if module == "lm_head.decoder" else f"{module}.{_HF_LEAVES.get(leaf, leaf)}"
    module, _, leaf = key.removeprefix("esm.").rpartition(".")
    ours = HF_MODULES.to_ours(module)
    return key if ours is None else f"{ours}.{_HF_LEAVES.get(leaf, leaf)}"


def esm2_to_hf_key(key: str, prefix: str = "esm.") -> str:
    """An ESM2 key -> the transformers key (``prefix`` before the encoder keys; ``lm_head.*`` never prefixed).

    Raises ``KeyError`` for a key that is not an ESM2 parameter.
    """
    if key == "lm_head.weight":
        return "lm_head.decoder.weight"
    if key.startswith("lm_head."):
        return key
    module, _, leaf = key.rpartition(".")
    theirs = HF_MODULES.to_theirs(module)
    if theirs is None:
        raise KeyError(f"{key!r} is not an ESM-2 parameter name")
    return f"{prefix}{theirs}.{leaf}"


def hf_to_esm2_state_dict(state: Mapping[str, torch.Tensor]) -> State:
    """Rename a transformers ESM state dict (EsmModel / EsmForMaskedLM) to ESM2's names, dropping buffers."""
    return {ours: value for key, value in state.items() if (ours := hf_to_esm2_key(key)) is not None}


def esm2_to_hf_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "esm.") -> State:
    """Rename an ESM2 state dict to transformers' ``EsmForMaskedLM`` names (``prefix=""``: EsmModel's)."""
    return {esm2_to_hf_key(key, prefix): value for key, value in state.items()}


def checkpoint_kind(data: Any) -> str:
    """What a fair-esm ``.pt`` holds: "esm2", "esmfold", "esm1b" (also ESM-1v), "esm1", "msa", or "unknown"."""
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        return "unknown"
    cfg = data.get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, Mapping) else None
    if isinstance(model_cfg, Mapping):
        if "trunk" in model_cfg or any(str(key).startswith("trunk.") for key in data["model"]):
            return "esmfold"
        if "encoder_layers" in model_cfg:
            return "esm2"
    args = data.get("args")
    arch = args.get("arch") if isinstance(args, Mapping) else None
    return {"roberta_large": "esm1b", "protein_bert_base": "esm1", "msa_transformer": "msa"}.get(arch, "unknown")


def checkpoint_kind_at(path: str | Path) -> str:
    """:func:`checkpoint_kind` of a checkpoint in any format at an existing ``path`` ("esm2", "esmfold", ...).

    A transformers folder is "esmfold" when its config says ``is_folding_model``, else "esm2"; a ``.pt`` is
    unpickled (memory-mapped, so cheap) to look at its config.
    """
    path = Path(path)
    kind = own_format_kind(path)
    if kind is not None:
        return kind
    if path.is_dir():
        config_path = path / "config.json"
        is_folding = config_path.is_file() and json.loads(config_path.read_text()).get("is_folding_model")
        return "esmfold" if is_folding else "esm2"
    return checkpoint_kind(load_checkpoint(path))


def esm2_config_from_fair(model_cfg: Mapping[str, Any]) -> Config:
    """``cfg["model"]`` of a fair-esm ESM-2 checkpoint -> the ``ESM2Config`` fields."""
    return {
        "num_layers": int(model_cfg["encoder_layers"]),
        "embed_dim": int(model_cfg["encoder_embed_dim"]),
        "attention_heads": int(model_cfg["encoder_attention_heads"]),
        "token_dropout": bool(model_cfg.get("token_dropout", True)),
        "lm_head": True,
    }


def strip_fair_prefixes(state: Mapping[str, torch.Tensor]) -> State:
    """fair-esm's key upgrade: drop a leading ``encoder.sentence_encoder.`` or else ``encoder.``; drop buffers."""
    stripped = {}
    for key, value in state.items():
        if key.endswith(DROPPED_SUFFIXES):
            continue
        for prefix in FAIR_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        stripped[key] = value
    return stripped


def contact_regression_path(path: str | Path) -> Path:
    """Where fair-esm expects the contact regression of ``<stem>.pt``: ``<stem>-contact-regression.pt`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}-contact-regression.pt")


def fair_regression_hint(path: str | Path) -> str:
    """How to give the fair-esm ``.pt`` at ``path`` its contact regression (`contact_regression_path`)."""
    path, regression = Path(path), contact_regression_path(path)
    return (
        f"put {regression.name} (from the same release as {path.name}) beside the checkpoint, at {regression}, and "
        "load it again"
    )


def fair_esm2_config(path: Path, data: Any) -> Config:
    """The ``ESM2Config`` fields of a fair-esm ESM-2 ``.pt`` (``data``: its unpickled content; no tensor is read).

    Raises ``CheckpointError`` naming ``path`` when ``data`` is not an ESM-2 checkpoint (an ESMFold one: load it with
    ``esmfold_lite.load_model``) or its config does not fit its tensors (``config_check``).
    """
    kind = checkpoint_kind(data)
    if kind != "esm2":
        raise CheckpointError(_wrong_kind_message(path, kind, data))
    config = esm2_config_from_fair(data["cfg"]["model"])
    shapes = state_shapes(strip_fair_prefixes(data["model"]))
    check_config(path, "esm2", config, shapes, lambda field: f"cfg.model.{FAIR_CONFIG_FIELDS.get(field, field)}")
    return config


def read_fair_esm2(path: str | Path, data: Mapping[str, Any] | None = None) -> tuple[Config, State]:
    """Config and state of a fair-esm ESM-2 ``.pt`` (``data``: its already-loaded content) and its regression file."""
    path = Path(path)
    data = load_checkpoint(path) if data is None else data
    config = fair_esm2_config(path, data)
    state = strip_fair_prefixes(data["model"])
    read_contact_regression(path, state)
    return config, complete_lm_state(state, config, f"{path} ({fair_regression_hint(path)})")


def read_contact_regression(path: Path, state: State) -> bool:
    """Add the tensors of ``<stem>-contact-regression.pt`` beside ``path`` to ``state``; whether the file exists."""
    regression = contact_regression_path(path)
    if regression.is_file():
        state.update(strip_fair_prefixes(load_checkpoint(regression)["model"]))
    return regression.is_file()


def _wrong_kind_message(path: Path, kind: str, data: Any) -> str:
    if kind == "esmfold":
        return f"{path} is an ESMFold checkpoint, not a language model: load it with esmfold_lite.load_model"
    if kind in ("esm1b", "esm1", "msa"):
        arch = data["args"].get("arch")
        return f"{path} is an ESM-1 family checkpoint (args.arch={arch!r}), not ESM-2; this reader handles ESM-2 only"
    return (
        f"not a checkpoint: {path} is not a fair-esm ESM-2 checkpoint; expected a dict with 'cfg' "
        "({'model': {'encoder_layers': ..., ...}}) and 'model' (the state dict)"
    )


def esm2_config_from_hf(config: Mapping[str, Any], source: str | Path = "config.json") -> Config:
    """A transformers ``EsmConfig`` dict -> the ``ESM2Config`` fields; refuses non-ESM-2 configurations.

    ``lm_head`` is left True: whether the folder holds the head shows in its weights, not in its config.
    """
    problems = []
    if config.get("is_folding_model"):
        problems.append("it is an ESMFold model (load it with esmfold_lite.load_model)")
    if config.get("position_embedding_type") != "rotary":
        problems.append(f"position_embedding_type is {config.get('position_embedding_type')!r}, ESM-2 uses 'rotary'")
    if config.get("emb_layer_norm_before"):
        problems.append("emb_layer_norm_before is set (an ESM-1b layout)")
    if config.get("intermediate_size") != 4 * config.get("hidden_size", 0):
        problems.append("intermediate_size is not 4 * hidden_size")
    if config.get("vocab_size") != 33:
        problems.append(f"vocab_size is {config.get('vocab_size')}, the ESM vocabulary has 33 tokens")
    if problems:
        raise CheckpointError(f"{source} does not describe an ESM-2 model: " + "; ".join(problems))
    return {
        "num_layers": int(config["num_hidden_layers"]),
        "embed_dim": int(config["hidden_size"]),
        "attention_heads": int(config["num_attention_heads"]),
        "token_dropout": bool(config.get("token_dropout", False)),
        "lm_head": True,
    }


TRANSFORMERS_REGRESSION_HINT = (
    "the transformers folder holds no contact_head.regression tensors; use one saved with them (as EsmForMaskedLM and "
    "EsmModel save them), or the fair-esm .pt with its <name>-contact-regression.pt beside it"
)


def transformers_weight_files(folder: str | Path) -> list[Path]:
    """The tensor files of a transformers model folder: ``model.safetensors`` (preferred) or ``pytorch_model.bin``,
    or the shards their ``*.index.json`` lists."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    raise CheckpointError(
        f"expected model.safetensors or pytorch_model.bin (or a sharded *.index.json) in folder {folder}"
    )


def read_transformers_state(folder: str | Path) -> State:
    """All tensors of a transformers model folder (safetensors preferred; ``.bin`` via the safe unpickler)."""
    state: State = {}
    for file in transformers_weight_files(folder):
        state.update(load_file(str(file)) if file.suffix == ".safetensors" else load_checkpoint(file))
    return state


def transformers_state_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a transformers model folder, without reading a tensor (the safetensors headers; a
    ``.bin`` is unpickled memory-mapped)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in transformers_weight_files(folder):
        is_safetensors = file.suffix == ".safetensors"
        shapes.update(safetensors_shapes(file) if is_safetensors else state_shapes(load_checkpoint(file)))
    return shapes


def transformers_esm2_problems(config: Config, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """`config_check.config_problems` of the ``ESM2Config`` fields read from a transformers ``config.json`` against
    the shapes of its tensors (transformers' names), naming the fields as ``config.json`` does."""
    ours = {name: shape for key, shape in shapes.items() if (name := hf_to_esm2_key(key)) is not None}
    return config_problems("esm2", config, ours, lambda field: HF_CONFIG_FIELDS.get(field, field))


def transformers_esm2_config(folder: str | Path) -> Config:
    """The ``ESM2Config`` fields of a transformers ESM-2 folder, from its ``config.json`` and its tensor names (no
    tensor is read): ``lm_head`` is whether it holds ``lm_head.*`` (EsmModel folders have no LM head). Raises
    ``CheckpointError`` when the config does not fit the tensors (``config_check``)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"expected config.json in folder {folder} (a transformers ESM-2 model folder)")
    config = esm2_config_from_hf(json.loads(config_path.read_text()), config_path)
    shapes = transformers_state_shapes(folder)
    refuse_config(config_path, transformers_esm2_problems(config, shapes))
    config["lm_head"] = any(key.startswith("lm_head.") for key in shapes)
    return config


def read_transformers_esm2(folder: str | Path) -> tuple[Config, State]:
    """Config and state of a transformers ESM-2 folder (``save_pretrained`` of EsmModel / EsmForMaskedLM)."""
    config = transformers_esm2_config(folder)
    state = hf_to_esm2_state_dict(read_transformers_state(folder))
    return config, complete_lm_state(state, config, str(folder))


def lone_file_error(path: Path) -> CheckpointError:
    """The error for a ``.safetensors`` / ``.json`` file that is neither half of an esmfold_lite pair."""
    return CheckpointError(
        f"not a checkpoint: {path} is a lone {path.suffix} file; pass the folder holding config.json + "
        "model.safetensors (transformers) or the <stem>.safetensors + <stem>.json pair (esmfold_lite)"
    )


def save_esm2(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` in esmfold_lite's own format (``<stem>.safetensors`` + ``<stem>.json``); returns the stem."""
    return save_own_format(path, "esm2", asdict(model.config), model.state_dict())


def contact_regression_missing(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` lacks a contact regression: no ``contact_head.regression.weight``, or an all-zero one (the
    filler of `complete_lm_state`, also as a file converted from a checkpoint without its regression stores it)."""
    weight = state.get(CONTACT_KEYS[0])
    return weight is None or not bool(weight.detach().any())


def complete_lm_state(state: State, config: Mapping[str, Any], source: str, warn: bool = True) -> State:
    """Tie a missing ``lm_head.weight`` to the embedding; zero-fill a missing contact regression.

    ``config`` needs ``num_layers`` and ``attention_heads`` (the regression's input size) and may set ``lm_head``.
    A zero-filled regression is warned about unless ``warn`` is False (ESM-1v, released without one).
    """
    if config.get("lm_head", True) and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    if not any(key in state for key in CONTACT_KEYS):
        if warn:
            warnings.warn(
                f"no contact regression weights for {source}: the model will refuse to predict contacts "
                "(embeddings and logits are unaffected)",
                stacklevel=3,
            )
        in_features = int(config["num_layers"]) * int(config["attention_heads"])
        state[CONTACT_KEYS[0]] = torch.zeros(1, in_features)
        state[CONTACT_KEYS[1]] = torch.zeros(1)
    return state
