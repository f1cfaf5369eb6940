"""fair-esm checkpoints that carry ``args`` (an ``argparse.Namespace``): ESM-1b / ESM-1v and the MSA Transformer.

* ``args.arch == "roberta_large"`` (ESM-1b, ESM-1v) -> kind ``"esm1b"``, config = the ``lm.esm1.ESM1Config`` fields.
* ``args.arch == "msa_transformer"`` (ESM-MSA-1b) -> kind ``"msa"``, config = the
  ``lm.msa_transformer.MSATransformerConfig`` fields.

Size arguments are named ``encoder_layers``, ``encoder_embed_dim``, ``encoder_ffn_embed_dim``,
``encoder_attention_heads`` (fair-esm drops the ``encoder_`` prefix; so does this reader). State keys lose their
``encoder.sentence_encoder.`` / ``encoder.`` prefix. Two quirks of the released files are undone as fair-esm's loader
undoes them: the MSA Transformer file names row attention ``column_self_attention`` and column attention
``row_self_attention`` (swapped back here), and ESM-1b/1v's ``<mask>`` token embedding is zeroed on load. The contact
regression comes from ``<stem>-contact-regression.pt`` beside the file; ESM-1v was released without one, so for a
file named ``esm1v*`` its absence is not warned about, and its hint (`regression_hint`) says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.weights.config_check import check_config, state_shapes
from esmfold_lite.weights.esm2_format import (
    Config,
    State,
    checkpoint_kind,
    complete_lm_state,
    fair_regression_hint,
    read_contact_regression,
    strip_fair_prefixes,
)
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

MSA_POSITION_KEY = "msa_position_embedding"
ESM1V_REGRESSION_HINT = (
    "ESM-1v has no contact head (it was released without contact regression weights); use ESM-1b or ESM-2 for contacts"
)
_SWAPPED_ATTENTION = re.compile(r"\b(row|column)_self_attention\b")


SIZE_ARGS = {"num_layers": "layers", "embed_dim": "embed_dim", "ffn_embed_dim": "ffn_embed_dim",
             "attention_heads": "attention_heads"}  # fmt: skip
"""Config field -> its ``args`` name without the ``encoder_`` prefix (`size_arg`)."""


def size_arg(args: Mapping[str, Any], name: str) -> int:
    """``args["encoder_<name>"]`` (as released), else ``args[name]``."""
    for key in (f"encoder_{name}", name):
        if key in args:
            return int(args[key])
    raise CheckpointError(f"checkpoint args have neither encoder_{name} nor {name}")


def arg_name(args: Mapping[str, Any], field: str) -> str:
    """How ``args`` names a config field (``num_layers`` -> ``args.encoder_layers``), for messages."""
    if field in SIZE_ARGS:
        name = SIZE_ARGS[field]
        return f"args.encoder_{name}" if f"encoder_{name}" in args else f"args.{name}"
    if field == "max_tokens_per_msa" and "max_tokens_per_msa" not in args:
        return "args.max_tokens"
    return f"args.{field}"


def _encoder_sizes(args: Mapping[str, Any]) -> Config:
    """The config fields ESM-1b/1v and the MSA Transformer read alike from ``args``."""
    return {
        "num_layers": size_arg(args, "layers"),
        "embed_dim": size_arg(args, "embed_dim"),
        "ffn_embed_dim": size_arg(args, "ffn_embed_dim"),
        "attention_heads": size_arg(args, "attention_heads"),
        "max_positions": int(args.get("max_positions", 1024)),
    }


def esm1_config_from_args(args: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Config:
    """ESM-1b/1v ``args`` (and the state, which shows whether ``emb_layer_norm_before`` is used) -> config fields."""
    return {
        **_encoder_sizes(args),
        "emb_layer_norm_before": any(key.startswith("emb_layer_norm_before.") for key in state),
        "token_dropout": bool(args.get("token_dropout", False)),
    }


def msa_config_from_args(args: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Config:
    """MSA Transformer ``args`` -> config fields; the MSA position width comes from the stored tensor.

    The column-attention chunk budget is ``max_tokens_per_msa``, else fairseq's ``max_tokens`` (as fair-esm reads it).
    """
    msa_positions = state.get(MSA_POSITION_KEY) if args.get("embed_positions_msa", False) else None
    return {
        **_encoder_sizes(args),
        "msa_position_dim": None if msa_positions is None else int(msa_positions.shape[-1]),
        "max_tokens_per_msa": int(args.get("max_tokens_per_msa") or args.get("max_tokens") or 2**14),
    }


def swap_axial_attention_names(key: str) -> str:
    """``...row_self_attention...`` <-> ``...column_self_attention...`` (the released MSA file has them swapped)."""
    return _SWAPPED_ATTENTION.sub(lambda m: ("column" if m.group(1) == "row" else "row") + "_self_attention", key)


def is_esm1v(path: Path) -> bool:
    """Whether the fair-esm file at ``path`` is an ESM-1v model, by its released name (``esm1v_t33_650M_UR90S_N``)."""
    return path.stem.startswith("esm1v")


def regression_hint(path: Path) -> str:
    """Where the contact regression of the ESM-1b/1v or MSA Transformer ``.pt`` at ``path`` comes from."""
    return ESM1V_REGRESSION_HINT if is_esm1v(path) else fair_regression_hint(path)


def _renamed_state(kind: str, weights: Mapping[str, torch.Tensor]) -> State:
    """A checkpoint's ``model`` under the model's key names (the MSA Transformer's axial attention names swapped)."""
    if kind == "msa":
        weights = {swap_axial_attention_names(key): value for key, value in weights.items()}
    return strip_fair_prefixes(weights)


def fair_esm1_config(path: Path, data: Any) -> tuple[str, Config]:
    """``(kind, config)`` of an ESM-1b/1v or MSA Transformer ``.pt`` (``data``: its unpickled content), from its
    ``args`` and the names and shapes of its tensors (no tensor is read).

    Raises ``CheckpointError`` naming ``path`` for the original ESM-1 (not implemented), a config that does not fit
    the tensors (``config_check``) and anything else.
    """
    kind = checkpoint_kind(data)
    if kind == "esm1":
        raise CheckpointError(
            f"{path} is an original ESM-1 checkpoint (args.arch='protein_bert_base', 2019), which esmfold_lite does "
            "not implement; use ESM-1b (esm1b_t33_650M_UR50S) or ESM-2"
        )
    if kind not in ("esm1b", "msa"):
        raise CheckpointError(
            f"not a checkpoint: {path} is not a fair-esm ESM-1b/ESM-1v/MSA Transformer checkpoint; expected a dict "
            "with 'args' (arch 'roberta_large' or 'msa_transformer') and 'model' (the state dict)"
        )
    state = _renamed_state(kind, data["model"])
    config_from_args = esm1_config_from_args if kind == "esm1b" else msa_config_from_args
    config = config_from_args(data["args"], state)
    check_config(path, kind, config, state_shapes(state), lambda field: arg_name(data["args"], field))
    return kind, config


def read_fair_esm1(path: str | Path, data: Mapping[str, Any] | None = None) -> tuple[str, Config, State]:
    """``(kind, config, state)`` of an ESM-1b/1v or MSA Transformer ``.pt`` (``data``: its loaded content)."""
    path = Path(path)
    data = load_checkpoint(path) if data is None else data
    kind, config = fair_esm1_config(path, data)
    state = _renamed_state(kind, data["model"])
    read_contact_regression(path, state)
    if kind == "esm1b" and "embed_tokens.weight" in state:
        embedding = state["embed_tokens.weight"].clone()
        embedding[ESM_ALPHABET.mask_idx] = 0  # as fair-esm's loader does, "for token drop"
        state["embed_tokens.weight"] = state["lm_head.weight"] = embedding
    return kind, config, complete_lm_state(state, config, f"{path} ({regression_hint(path)})", warn=not is_esm1v(path))
