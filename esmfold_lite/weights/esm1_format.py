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
file named ``esm1v*`` its absence is not warned about (contacts are meaningless either way).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.alphabet import ESM_ALPHABET
from esmfold_lite.weights.esm2_format import (
    Config,
    State,
    checkpoint_kind,
    complete_lm_state,
    contact_regression_path,
    read_contact_regression,
    strip_fair_prefixes,
)
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

MSA_POSITION_KEY = "msa_position_embedding"
_SWAPPED_ATTENTION = re.compile(r"\b(row|column)_self_attention\b")


def size_arg(args: Mapping[str, Any], name: str) -> int:
    """``args["encoder_<name>"]`` (as released), else ``args[name]``."""
    for key in (f"encoder_{name}", name):
        if key in args:
            return int(args[key])
    raise CheckpointError(f"checkpoint args have neither encoder_{name} nor {name}")


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


def read_fair_esm1(path: str | Path, data: Mapping[str, Any] | None = None) -> tuple[str, Config, State]:
    """``(kind, config, state)`` of an ESM-1b/1v or MSA Transformer ``.pt`` (``data``: its loaded content)."""
    path = Path(path)
    data = load_checkpoint(path) if data is None else data
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
    args = data["args"]
    weights = data["model"]
    if kind == "msa":
        weights = {swap_axial_attention_names(key): value for key, value in weights.items()}
    state = strip_fair_prefixes(weights)
    read_contact_regression(path, state)
    if kind == "esm1b":
        embedding = state["embed_tokens.weight"].clone() if "embed_tokens.weight" in state else None
        if embedding is not None:
            embedding[ESM_ALPHABET.mask_idx] = 0  # as fair-esm's loader does, "for token drop"
            state["embed_tokens.weight"] = state["lm_head.weight"] = embedding
        config = esm1_config_from_args(args, state)
    else:
        config = msa_config_from_args(args, state)
    regression = contact_regression_path(path)
    hint = f"put {regression.name} (from the same release as {path.name}) at {regression}"
    return kind, config, complete_lm_state(state, config, f"{path} ({hint})", warn=not path.stem.startswith("esm1v"))
