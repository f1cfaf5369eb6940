"""ESM C's official weight files -> ``(config dict, state dict in esmfold_lite's ESMC names)``.

The files ``esmc_300m_2024_12_v0.pth`` and ``esmc_600m_2024_12_v0.pth`` (HuggingFace repositories
``EvolutionaryScale/esmc-300m-2024-12`` / ``esmc-600m-2024-12``, path ``data/weights/``) are the bare state dict of
the ``esm`` package's ``ESMC`` module saved with ``torch.save``: no config, no wrapper dict. Its keys (``N`` = block):

* ``embed.weight`` ``(64, D)`` -> ``embed_tokens.weight``
* ``transformer.blocks.N.attn.layernorm_qkv.0.{weight,bias}`` ``(D,)`` -> ``layers.N.attention.norm.*``
* ``transformer.blocks.N.attn.layernorm_qkv.1.weight`` ``(3D, D)`` -> ``layers.N.attention.qkv.weight``
* ``transformer.blocks.N.attn.q_ln.weight``, ``k_ln.weight`` ``(D,)`` -> ``layers.N.attention.q_norm``, ``k_norm``
* ``transformer.blocks.N.attn.out_proj.weight`` ``(D, D)`` -> ``layers.N.attention.out_proj.weight``
* ``transformer.blocks.N.ffn.0.{weight,bias}`` ``(D,)`` -> ``layers.N.ffn.norm.*``
* ``transformer.blocks.N.ffn.1.weight`` ``(2F, D)`` -> ``layers.N.ffn.w_in.weight``
* ``transformer.blocks.N.ffn.3.weight`` ``(D, F)`` -> ``layers.N.ffn.w_out.weight``
* ``transformer.norm.weight`` ``(D,)`` -> ``final_norm.weight``
* ``sequence_head.0.{weight,bias}`` ``(D, D)``, ``(D,)`` -> ``lm_head.dense.*``
* ``sequence_head.2.{weight,bias}`` ``(D,)`` -> ``lm_head.layer_norm.*``
* ``sequence_head.3.{weight,bias}`` ``(64, D)``, ``(64,)`` -> ``lm_head.output.*``

The rotary ``inv_freq`` buffers are not saved (non-persistent) and are dropped if present.

The config comes from the shapes: ``D`` and the vocabulary from ``embed.weight``, the depth from the block count, the
SwiGLU width ``F`` from ``ffn.1``. The head count is not in any shape; every released ESM C uses heads of width 64
(960 = 15 x 64, 1152 = 18 x 64), so ``attention_heads = D / 64`` unless the caller says otherwise
(``read_official_esmc(path, attention_heads=H)``, e.g. to convert a model of another width to esmfold_lite's own
format, whose json records it).

transformers' ``EsmcModel`` (the ``esmc.`` part of an ``EsmFold2Model`` checkpoint; no sequence head) is the same
model with separate projections: ``layers.N.input_layernorm`` -> ``layers.N.attention.norm``,
``self_attn.{q,k,v}_proj`` concatenated (in that order, along the outputs) -> ``attention.qkv``,
``self_attn.{q,k}_norm`` -> ``attention.{q,k}_norm``, ``self_attn.o_proj`` -> ``attention.out_proj``,
``post_attention_layernorm`` -> ``ffn.norm``, ``mlp.{gate,up}_proj`` concatenated -> ``ffn.w_in``, ``mlp.down_proj``
-> ``ffn.w_out``, ``norm`` -> ``final_norm``; ``embed_tokens`` keeps its name (`TRANSFORMERS_MODULES`,
`TRANSFORMERS_FUSED`; `transformers_to_esmc_state_dict` and back). Nothing here imports a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.config_check import check_config, state_shapes
from esmfold_lite.weights.renames import RenameTable
from esmfold_lite.weights.safe_pickle import CheckpointError, load_checkpoint

State = dict[str, torch.Tensor]
Config = dict[str, Any]

ESMC_HEAD_DIM = 64
"""Head width of every released ESM C: ``attention_heads = embed_dim / ESMC_HEAD_DIM``."""

OFFICIAL_MODULES = RenameTable(
    (
        ("layers.{n}.attention.norm", "transformer.blocks.{n}.attn.layernorm_qkv.0"),
        ("layers.{n}.attention.qkv", "transformer.blocks.{n}.attn.layernorm_qkv.1"),
        ("layers.{n}.attention.q_norm", "transformer.blocks.{n}.attn.q_ln"),
        ("layers.{n}.attention.k_norm", "transformer.blocks.{n}.attn.k_ln"),
        ("layers.{n}.attention.out_proj", "transformer.blocks.{n}.attn.out_proj"),
        ("layers.{n}.ffn.norm", "transformer.blocks.{n}.ffn.0"),
        ("layers.{n}.ffn.w_in", "transformer.blocks.{n}.ffn.1"),
        ("layers.{n}.ffn.w_out", "transformer.blocks.{n}.ffn.3"),
        ("embed_tokens", "embed"),
        ("final_norm", "transformer.norm"),
        ("lm_head.dense", "sequence_head.0"),
        ("lm_head.layer_norm", "sequence_head.2"),
        ("lm_head.output", "sequence_head.3"),
    )
)
"""Our ESMC module path <-> the official file's."""
DROPPED_SUFFIXES = ("rotary.inv_freq",)
"""Buffers a state dict may hold that are recomputed here."""

TRANSFORMERS_MODULES = RenameTable(
    (
        ("layers.{n}.attention.norm", "layers.{n}.input_layernorm"),
        ("layers.{n}.attention.q_norm", "layers.{n}.self_attn.q_norm"),
        ("layers.{n}.attention.k_norm", "layers.{n}.self_attn.k_norm"),
        ("layers.{n}.attention.out_proj", "layers.{n}.self_attn.o_proj"),
        ("layers.{n}.ffn.norm", "layers.{n}.post_attention_layernorm"),
        ("layers.{n}.ffn.w_out", "layers.{n}.mlp.down_proj"),
        ("embed_tokens", "embed_tokens"),
        ("final_norm", "norm"),
    )
)
"""Our ESMC module path <-> transformers' ``EsmcModel``'s, where one module is one module."""
TRANSFORMERS_FUSED = (
    RenameTable((("layers.{n}.attention.qkv", "layers.{n}.self_attn.q_proj"),)),
    RenameTable((("layers.{n}.attention.qkv", "layers.{n}.self_attn.k_proj"),)),
    RenameTable((("layers.{n}.attention.qkv", "layers.{n}.self_attn.v_proj"),)),
    RenameTable((("layers.{n}.ffn.w_in", "layers.{n}.mlp.gate_proj"),)),
    RenameTable((("layers.{n}.ffn.w_in", "layers.{n}.mlp.up_proj"),)),
)
"""Our fused weight <-> transformers' parts, one table per part, in the order the parts are concatenated (dim 0)."""
TRANSFORMERS_DROPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
"""transformers' rotary buffers (non-persistent; dropped if a state dict holds them)."""
TRANSFORMERS_ESMC_DEFAULTS = {
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}
"""transformers ``EsmcConfig`` fields ESM C has one value of (the ``esm`` package's, and ``lm.esmc``'s)."""

_OFFICIAL_BLOCK = re.compile(r"^transformer\.blocks\.(\d+)\.(.+)$")
_OUR_BLOCK = re.compile(r"^layers\.(\d+)\.(.+)$")


def official_to_esmc_key(key: str) -> str | None:
    """An official ESM C key -> ours (``None`` for a dropped buffer); a key of no ESM C module comes back unchanged,
    so a strict load reports it."""
    if key.endswith(DROPPED_SUFFIXES):
        return None
    module, _, leaf = key.rpartition(".")
    ours = OFFICIAL_MODULES.to_ours(module)
    return key if ours is None else f"{ours}.{leaf}"


def esmc_to_official_key(key: str) -> str:
    """Our ESMC key -> the official one; ``KeyError`` for a key that is not an ESMC parameter."""
    module, _, leaf = key.rpartition(".")
    theirs = OFFICIAL_MODULES.to_theirs(module)
    if theirs is None:
        raise KeyError(f"{key!r} is not an ESM C parameter name")
    return f"{theirs}.{leaf}"


def official_to_esmc_state_dict(state: Mapping[str, torch.Tensor]) -> State:
    """Rename an official ESM C state dict to our names, dropping recomputed buffers."""
    return {ours: value for key, value in state.items() if (ours := official_to_esmc_key(key)) is not None}


def esmc_to_official_state_dict(state: Mapping[str, torch.Tensor]) -> State:
    """Rename our ESMC state dict to the official names (what ``esm.models.esmc.ESMC.load_state_dict`` takes)."""
    return {esmc_to_official_key(key): value for key, value in state.items()}


def is_official_esmc(data: Any) -> bool:
    """Whether an unpickled file is an official ESM C state dict (tensors under ``embed.weight``,
    ``transformer.blocks.N...`` and ``sequence_head...``)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("embed.weight"), torch.Tensor):
        return False
    keys = [key for key in data if isinstance(key, str)]
    return any(_OFFICIAL_BLOCK.match(key) for key in keys) and any(key.startswith("sequence_head.") for key in keys)


def esmc_config_from_state(
    state: Mapping[str, torch.Tensor], source: object, attention_heads: int | None = None
) -> Config:
    """``ESMCConfig`` fields read off the tensor shapes of an ESM C state dict in our names (see module docstring);
    ``attention_heads`` None: ``embed_dim / 64``.

    Raises ``CheckpointError`` naming ``source`` when a tensor the shapes come from is missing, or the head count is
    not given and the width is not a multiple of 64, or it does not divide the width (``config_check``).
    """
    try:
        vocab_size, embed_dim = state["embed_tokens.weight"].shape
        ffn_dim = state["layers.0.ffn.w_in.weight"].shape[0] // 2
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source} is not a complete ESM C state dict: no usable {exc}") from None
    blocks = {int(match.group(1)) for key in state if (match := _OUR_BLOCK.match(key))}
    if attention_heads is None:
        if embed_dim % ESMC_HEAD_DIM:
            raise CheckpointError(
                f"{source} holds an ESM C of width {embed_dim}, not a multiple of the released models' head width "
                f"{ESMC_HEAD_DIM}, so its number of attention heads is unknown; read it with "
                "esmfold_lite.weights.esmc_format.read_official_esmc(path, attention_heads=H) and save it in "
                "esmfold_lite's own format (save_own_format(out, 'esmc', config, state))"
            )
        attention_heads = int(embed_dim) // ESMC_HEAD_DIM
    config = {
        "num_layers": max(blocks) + 1,
        "embed_dim": int(embed_dim),
        "attention_heads": int(attention_heads),
        "vocab_size": int(vocab_size),
        "ffn_dim": int(ffn_dim),
    }
    check_config(source, "esmc", config, state_shapes(state))  # the sizes are the shapes; this bounds the heads
    return config


def read_official_esmc(path: str | Path, data: Any = None, attention_heads: int | None = None) -> tuple[Config, State]:
    """Config and state of an official ESM C ``.pth`` (``data``: its already-unpickled content; ``attention_heads``:
    see :func:`esmc_config_from_state`)."""
    path = Path(path)
    data = load_checkpoint(path) if data is None else data
    if not is_official_esmc(data):
        raise CheckpointError(
            f"not a checkpoint: {path} is not an official ESM C weight file (a state dict with embed.weight, "
            "transformer.blocks.N.* and sequence_head.*)"
        )
    state = official_to_esmc_state_dict(data)
    return esmc_config_from_state(state, path, attention_heads), state


def transformers_to_esmc_state_dict(state: Mapping[str, torch.Tensor]) -> State:
    """Rename a transformers ``EsmcModel`` state dict (no ``esmc.`` prefix) to our ESMC names, concatenating the
    split projections (`TRANSFORMERS_FUSED`); a key of no ESM C module comes back unchanged, so a strict load reports
    it, and a fused weight missing a part is left out, so a strict load reports it missing."""
    renamed: State = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith(TRANSFORMERS_DROPPED_SUFFIXES):
            continue
        module, _, leaf = key.rpartition(".")
        if (ours := TRANSFORMERS_MODULES.to_ours(module)) is not None:
            renamed[f"{ours}.{leaf}"] = value
            continue
        fused = [(index, target) for index, table in enumerate(TRANSFORMERS_FUSED) if (target := table.to_ours(module))]
        if fused:
            index, target = fused[0]
            parts.setdefault(f"{target}.{leaf}", {})[index] = value
        else:
            renamed[key] = value
    for key, pieces in parts.items():
        wanted = [index for index, table in enumerate(TRANSFORMERS_FUSED) if table.to_theirs(key.rpartition(".")[0])]
        if sorted(pieces) == wanted:
            renamed[key] = torch.cat([pieces[index] for index in wanted], dim=0)
    return renamed


def esmc_to_transformers_state_dict(state: Mapping[str, torch.Tensor]) -> State:
    """Our ESMC state dict -> transformers' ``EsmcModel`` names (the sequence head, which ``EsmcModel`` lacks, is
    left out); ``KeyError`` for a key that is not an ESM C parameter."""
    renamed: State = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module.startswith("lm_head."):
            continue
        if (theirs := TRANSFORMERS_MODULES.to_theirs(module)) is not None:
            renamed[f"{theirs}.{leaf}"] = value
            continue
        split = [name for table in TRANSFORMERS_FUSED if (name := table.to_theirs(module))]
        if not split:
            raise KeyError(f"{key!r} is not an ESM C parameter name")
        for name, piece in zip(split, value.chunk(len(split), dim=0), strict=True):
            renamed[f"{name}.{leaf}"] = piece
    return renamed


def esmc_config_from_transformers(config: Mapping[str, Any], source: object = "config.json") -> Config:
    """A transformers ``EsmcConfig`` dict (e.g. ``EsmFold2Config``'s ``esmc_config``) -> the ``ESMCConfig`` fields,
    without a sequence head (``EsmcModel`` has none); refuses what ESM C does not have: another activation, biases,
    another rotary base or type, grouped-query attention or a head width other than ``hidden_size / heads``."""
    embed_dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    problems = [
        f"{name} is {config[name]!r}, ESM C has {value!r}"
        for name, value in TRANSFORMERS_ESMC_DEFAULTS.items()
        if config.get(name) not in (None, value)
    ]
    for name in ("num_key_value_heads", "head_dim"):
        expected = heads if name == "num_key_value_heads" else embed_dim // heads
        if config.get(name) not in (None, expected):
            problems.append(f"{name} is {config[name]!r}, ESM C has {expected}")
    if problems:
        raise CheckpointError(f"{source} does not describe an ESM C model: " + "; ".join(problems))
    return {
        "num_layers": int(config["num_hidden_layers"]),
        "embed_dim": embed_dim,
        "attention_heads": heads,
        "vocab_size": int(config["vocab_size"]),
        "ffn_dim": int(config["intermediate_size"]),
        "lm_head": False,
    }
