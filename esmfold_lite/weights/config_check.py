"""A checkpoint's config against its own tensor shapes and sane bounds, before any module is built.

A config names sizes; the tensors have shapes. A model built from a config that its tensors do not fit fails only once
every module the config names exists: for a config.json that says 10^6 layers, that is minutes and gigabytes even on
the meta device. `check_config` (`config_problems` + `refuse_config` for a file with two configs) compares first, from
shapes alone (a safetensors header, the tensors of a memory-mapped pickle: no tensor data is read), by the rules of
the model kind (`RULES`):

* a depth (`Depth`: ``num_layers``, ``trunk.num_blocks``, ...) must be the number of indices ``N`` in the tensor
  names ``<prefix>N.*``, which run from 0 without a gap, and at most ``MAX_DEPTH`` (so that a name with a huge index
  cannot ask for a huge model either);
* a width (`Width`) must be the one a tensor that has it shows (``embed_dim``: the columns of ``embed_tokens.weight``);
* what no shape shows (`Bound`) must be in bounds: a head count divides its width; the structure module's iterations
  of its one shared block and the trunk's default passes are at most ``MAX_ITERATIONS``.

Config fields are dotted paths in the kind's own names (the LM config dataclasses' fields for ``esm2``, ``esm1b``,
``msa``, ``esmc``; the official fair-esm names, nested, for ``esmfold``); tensor names are the model's. A field the
config does not set is not checked (its default is sane; the strict load names a tensor it does not fit). Every problem
goes into one ``CheckpointError`` naming the file, each field as the file spells it (the reader's ``spelling``), its
value and what the tensors say or the bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from esmfold_lite.geometry.residue_constants import atom_type_num
from esmfold_lite.weights.safe_pickle import CheckpointError

Shapes = Mapping[str, Sequence[int]]
MAX_DEPTH = 1024
"""Bound on a depth: the deepest released model has 48 layers (ESM-2 15B) or blocks (the ESMFold trunk)."""
MAX_ITERATIONS = 64
"""Bound on the repeats of a shared module that no tensor shows: structure-module blocks and the default trunk passes
(esmfold_v1: 8 and 4)."""


@dataclass(frozen=True)
class Depth:
    """``field`` is the number of indices ``N`` of the tensor names ``<prefix>N.*``, ``0 .. field - 1`` all present,
    and at most ``MAX_DEPTH``."""

    field: str
    prefix: str


@dataclass(frozen=True)
class Width:
    """``shape(key)[dim] == field * scale + offset``; ``scale`` is a number or another field (checked before this
    one). Not checked when the tensor is absent."""

    field: str
    key: str
    dim: int
    scale: int | str = 1
    offset: int = 0


@dataclass(frozen=True)
class Bound:
    """``low <= field <= high`` (``high`` None: no upper bound); ``divides``: another field it must divide (a head
    count into its width); ``optional``: None is allowed."""

    field: str
    low: int = 1
    high: int | None = None
    divides: str | None = None
    optional: bool = False


Rule = Depth | Width | Bound


def _encoder_rules(ffn_key: str) -> tuple[Rule, ...]:
    """ESM-1b/1v and the MSA Transformer: learned positions (``max_positions`` + 2 rows) and an FFN of its own width."""
    return (
        Width("ffn_embed_dim", ffn_key, 0),
        Width("max_positions", "embed_positions.weight", 0, offset=2),
    )


_LM_RULES: tuple[Rule, ...] = (
    Depth("num_layers", "layers."),
    Width("embed_dim", "embed_tokens.weight", 1),
    Bound("attention_heads", divides="embed_dim"),
    Width("attention_heads", "contact_head.regression.weight", 1, scale="num_layers"),  # one input per layer and head
)
_SM = "trunk.structure_module"
RULES: dict[str, tuple[Rule, ...]] = {
    "esm2": _LM_RULES,
    "esm1b": (*_LM_RULES, *_encoder_rules("layers.0.fc1.weight")),
    "msa": (
        *_LM_RULES,
        *_encoder_rules("layers.0.feed_forward_layer.layer.fc1.weight"),
        Bound("max_tokens_per_msa"),
    ),
    "esmc": (
        Depth("num_layers", "layers."),
        Width("embed_dim", "embed_tokens.weight", 1),
        Width("vocab_size", "embed_tokens.weight", 0),
        Width("ffn_dim", "layers.0.ffn.w_in.weight", 0, scale=2),  # SwiGLU: both halves in one matrix
        Bound("attention_heads", divides="embed_dim"),
    ),
    "esmfold": (
        Depth("trunk.num_blocks", "trunk.blocks."),
        Width("trunk.sequence_state_dim", "trunk.recycle_s_norm.weight", 0),
        Width("trunk.pairwise_state_dim", "trunk.recycle_z_norm.weight", 0),
        Bound("trunk.sequence_head_width", divides="trunk.sequence_state_dim"),
        Bound("trunk.pairwise_head_width", divides="trunk.pairwise_state_dim"),
        Width("trunk.position_bins", "trunk.pairwise_positional_embedding.embedding.weight", 0, scale=2, offset=2),
        Bound("trunk.max_recycles", high=MAX_ITERATIONS),
        Bound("trunk.chunk_size", optional=True),
        Width(f"{_SM}.c_s", f"{_SM}.layer_norm_s.weight", 0),
        Width(f"{_SM}.c_z", f"{_SM}.layer_norm_z.weight", 0),
        Width(f"{_SM}.no_heads_ipa", f"{_SM}.ipa.head_weights", 0),
        Width(f"{_SM}.c_ipa", f"{_SM}.ipa.linear_q.weight", 0, scale=f"{_SM}.no_heads_ipa"),
        Width(f"{_SM}.c_resnet", f"{_SM}.angle_resnet.linear_in.weight", 0),
        Depth(f"{_SM}.no_transition_layers", f"{_SM}.transition.layers."),
        Depth(f"{_SM}.no_resnet_blocks", f"{_SM}.angle_resnet.layers."),
        Width(f"{_SM}.no_angles", f"{_SM}.angle_resnet.linear_out.weight", 0, scale=2),  # (sin, cos) per angle
        Bound(f"{_SM}.no_blocks", high=MAX_ITERATIONS),
        Width("lddt_head_hid_dim", "lddt_head.1.weight", 0),
        Width("lddt_bins", "lddt_head.3.weight", 0, scale=atom_type_num),
        Width("distogram_bins", "distogram_head.weight", 0),
        Width("ptm_bins", "ptm_head.weight", 0),
    ),
    "esmfold2": (  # transformers' EsmFold2Config names; the ESM C inside is checked by the "esmc" rules
        Depth("folding_trunk_num_hidden_layers", "folding_trunk.layers."),
        Depth("lm_encoder.num_hidden_layers", "lm_encoder.layers."),
        Depth("parcae_num_coda_layers", "parcae.output_stack.layers."),
        Depth("atom_encoder.num_hidden_layers", "input_embedder.atom_encoder.layers."),
        Depth("structure_head.diffusion_module.num_hidden_layers", "structure_head.token_transformer.layers."),
        Depth("structure_head.diffusion_module.atom_encoder.num_hidden_layers", "structure_head.atom_encoder.layers."),
        Width("pairwise_hidden_size", "distogram_head.weight", 1),
        Width("structure_head.num_distogram_bins", "distogram_head.weight", 0),
        Width("single_inputs_size", "structure_head.conditioning.single_input_norm.weight", 0),
        Width("esmc_config.hidden_size", "language_model.pair_input_norm.weight", 0),
        Width("esmc_config.num_hidden_layers", "language_model.layer_weights", 0, offset=1),  # + the embeddings
        Bound("num_loops", high=MAX_ITERATIONS),
        Bound("chunk_size", optional=True),
    ),
}
"""Checkpoint kind -> the rules its config is checked by, in order (a field another rule scales by comes first)."""


def check_config(
    source: object,
    kind: str,
    config: Mapping[str, Any],
    shapes: Shapes,
    spelling: Callable[[str], str] = str,
) -> None:
    """Check a checkpoint's ``config`` (kind ``kind``, see the module docstring) against its tensors' ``shapes``.

    Args:
        source: the file, named in the error.
        config: the config in the kind's field names (nested dicts for dotted fields).
        shapes: tensor name (the model's) -> shape, e.g. `state_shapes` or `safetensors_shapes`.
        spelling: our dotted field -> how the file names it (``"num_layers"`` -> ``"num_hidden_layers"``).

    Raises:
        CheckpointError: naming ``source`` and, for every field that does not fit, the field, its value and what
            the tensors say (or the bound).
    """
    refuse_config(source, config_problems(kind, config, shapes, spelling))


def refuse_config(source: object, problems: Sequence[str]) -> None:
    """The CheckpointError of `check_config` for ``problems`` (`config_problems`, of one or more configs of one file);
    nothing when there are none."""
    if problems:
        raise CheckpointError(
            f"the config in {source} does not fit its weights: {'; '.join(problems)}. A config and weights from "
            "different models, or an edited config: use the config that came with these weights"
        )


def config_problems(
    kind: str, config: Mapping[str, Any], shapes: Shapes, spelling: Callable[[str], str] = str
) -> list[str]:
    """What `check_config` finds wrong with ``config``, one phrase per field (empty: nothing)."""
    problems: dict[str, str] = {}
    for rule in RULES[kind]:
        value, present = _get(config, rule.field)
        if not present or rule.field in problems:
            continue
        if value is None and isinstance(rule, Bound) and rule.optional:
            continue
        name = spelling(rule.field)
        if not _is_count(value):
            problems[rule.field] = f"{name} is {value!r}, not a whole number of at least 0"
            continue
        problem = _problem(rule, value, name, config, shapes, problems, spelling)
        if problem is not None:
            problems[rule.field] = problem
    return list(problems.values())


def _problem(
    rule: Rule,
    value: int,
    name: str,
    config: Mapping[str, Any],
    shapes: Shapes,
    problems: Mapping[str, str],
    spelling: Callable[[str], str],
) -> str | None:
    """What is wrong with one whole-number ``value`` of ``rule.field`` (None: nothing)."""
    if isinstance(rule, Depth):
        pattern = re.compile(rf"^{re.escape(rule.prefix)}(\d+)\.")
        indices = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
        count = 1 + max(indices, default=-1)
        if value > MAX_DEPTH:
            return f"{name} is {value}, but it must be at most {MAX_DEPTH} (the weights hold {len(indices)})"
        if len(indices) != count:
            return f"{name} is {value}, but the weights hold {rule.prefix}N.* for {len(indices)} of N = 0..{count - 1}"
        if value == count:
            return None
        held = f"up to {rule.prefix}{count - 1}.*" if count else f"no {rule.prefix}N.* tensors"
        return f"{name} is {value}, but the weights hold {count} ({held})"
    if isinstance(rule, Width):
        shape = shapes.get(rule.key)
        scale = rule.scale if isinstance(rule.scale, int) else _get(config, rule.scale)[0]
        if shape is None or len(shape) <= rule.dim or rule.scale in problems or not _is_count(scale) or not scale:
            return None  # nothing to compare with: the strict load names what is missing
        size = int(shape[rule.dim])
        if value * scale + rule.offset == size:
            return None
        fits = (size - rule.offset) % scale == 0 and size >= rule.offset
        says = f"{name} = {(size - rule.offset) // scale}" if fits else f"no {name}"
        return f"{name} is {value}, but {rule.key} has shape {tuple(shape)}, which means {says}"
    if not (rule.low <= value and (rule.high is None or value <= rule.high)):
        bound = f"at least {rule.low}" + ("" if rule.high is None else f" and at most {rule.high}")
        return f"{name} is {value}, but it must be {bound}"
    width = _get(config, rule.divides)[0] if rule.divides else None
    if _is_count(width) and rule.divides not in problems and width % value:
        return f"{name} is {value}, but it must divide {spelling(rule.divides)} ({width})"
    return None


def _get(config: Mapping[str, Any], field: str) -> tuple[Any, bool]:
    """``(value, whether the config sets it)`` of a dotted ``field`` of nested dicts."""
    value: Any = config
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None, False
        value = value[part]
    return value, True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def state_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a state dict (memory-mapped tensors are not read)."""
    return {key: tuple(value.shape) for key, value in state.items()}


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a ``.safetensors`` file's header, without reading a tensor; ``CheckpointError`` for
    a file without a readable header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except SafetensorError as exc:
        raise CheckpointError(f"not a checkpoint: {path} is not a readable safetensors file ({exc})") from None
