"""Embeddings of raw sequences, or of MSAs' query rows, from any ESM language model.

Works with every model that has ESM-2's ``forward(tokens, repr_layers, need_head_weights, return_contacts)``, a
``num_layers`` attribute and an ``alphabet`` (``esmfold_lite.alphabet.Alphabet``); ``max_residues`` (a length limit)
is honoured when the model has one. Single-sequence models: sequences are sorted by length and packed into batches
under a token budget; per-sequence results are cut out of the padded batch and put back in input order, so they equal
(up to float rounding) one-sequence runs. MSA models (``model.takes_msa``, the MSA Transformer): each MSA is read
(``esmfold_lite.io.msa``), cut to ``max_depth`` rows and run alone; results are its query row's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH, MSA, as_msa, select_rows
from esmfold_lite.lm.contact_head import check_contact_regression
from esmfold_lite.progress_display import Progress


@dataclass
class Embeddings:
    """Embeddings of ``B`` sequences; every dict is keyed by the layer values as requested (e.g. ``-1``).

    Attributes:
        sequences: the input sequences, in input order.
        representations: ``{layer: [ (L_i, D) ]}`` per-residue vectors, without ``<cls>``/``<eos>``.
        mean: ``{layer: (B, D)}`` mean over each sequence's residues.
        cls: ``{layer: (B, D)}`` the ``<cls>`` token's vector.
        contacts: ``[ (L_i, L_i) ]`` contact probabilities, or ``None`` when not asked for.
        logits: ``[ (L_i, V) ]`` masked-LM logits at the residues (vocabulary order of ``model.alphabet.tokens``),
            or ``None`` when not asked for.
        msas: for an MSA model, the MSAs as run (after row selection); ``sequences`` are their queries.
    """

    sequences: list[str]
    representations: dict[int, list[torch.Tensor]]
    mean: dict[int, torch.Tensor]
    cls: dict[int, torch.Tensor]
    contacts: list[torch.Tensor] | None = None
    logits: list[torch.Tensor] | None = None
    msas: list[MSA] | None = None


def resolve_layer(layer: int, num_layers: int) -> int:
    """Layer index in ``0..num_layers`` (0 = embeddings); negative values count from the end (-1 = last)."""
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(f"layer {layer} is out of range for a {num_layers}-layer model (use 0..{num_layers} or -1)")
    return resolved


def requested_layers(repr_layers: Iterable[int], num_layers: int) -> dict[int, list[int]]:
    """``{absolute layer: [the keys asked for it]}`` (``-1`` and ``num_layers`` may both name the last layer)."""
    wanted: dict[int, list[int]] = {}
    for layer in repr_layers:
        wanted.setdefault(resolve_layer(layer, num_layers), []).append(layer)
    return wanted


def token_budget_batches(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Group item indices into batches whose padded size ``count * longest`` stays within ``max_tokens``.

    Items are taken longest first, so each batch holds similar lengths; an item longer than the budget gets a
    batch of its own. ``max_tokens=None`` puts every item in a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and max_tokens is not None:
            batch = batches[-1]
            if (len(batch) + 1) * lengths[batch[0]] <= max_tokens:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def _as_msas(inputs, max_depth: int | None, selection: str) -> list[MSA]:
    """One MSA (a path or an ``MSA``) or a list of MSAs (paths, lists of aligned rows, ``MSA``) -> selected MSAs."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike, MSA)) else list(inputs)
    msas = []
    for i, item in enumerate(items):
        if isinstance(item, str) and not os.path.exists(item):
            raise ValueError(
                f"MSA {i} ({item[:30]!r}) is not an existing file; give each MSA as an a3m/aligned-FASTA path or as "
                "a list of aligned rows, query first (e.g. embed(model, [[query, row2, ...]]))"
            )
        msas.append(select_rows(as_msa(item), max_depth, selection))
    return msas


def msa_problem(model: nn.Module, msa: MSA) -> str | None:
    """Why ``model`` (an MSA model) cannot take ``msa`` as it is, or None: more columns than its learned positions
    cover (``max_residues``) or more rows than its row positions do (``max_rows``)."""
    name = type(model).__name__
    columns = getattr(model, "max_residues", None)
    if columns is not None and msa.width > columns:
        return (
            f"{msa.width} columns, more than the {columns} {name} can embed; split it into windows of at most that "
            "length"
        )
    rows = getattr(model, "max_rows", None)
    if rows is not None and msa.depth > rows:
        return f"{msa.depth} rows, more than the {rows} {name} takes; keep at most {rows} (max_depth, --max-depth)"
    return None


def embed(
    model: nn.Module,
    sequences,
    layers: Sequence[int] = (-1,),
    contacts: bool = False,
    logits: bool = False,
    max_tokens_per_batch: int | None = None,
    progress: bool = False,
    max_depth: int | None = DEFAULT_MAX_DEPTH,
    selection: str = "diverse",
) -> Embeddings:
    """Embed sequences (or MSAs, for the MSA Transformer) with a language model, without gradients, on its device.

    Args:
        model: an ESM language model (see the module docstring).
        sequences: single-sequence models: one sequence or a list; residue letters (any case), special tokens such as
            ``<mask>`` inline. MSA models: one MSA or a list of MSAs, each an a3m / a2m / aligned-FASTA path, a list
            of aligned rows (query first) or an ``esmfold_lite.io.msa.MSA``.
        layers: layers to return: 0 = token embeddings, ``num_layers`` or -1 = the last (after its final LayerNorm).
        contacts: also predict contact maps.
        logits: also return the masked-LM logits at every residue (the model needs its LM head).
        max_tokens_per_batch: budget on the padded batch size ``count * (longest + 2)`` in tokens; ``None`` runs
            one sequence at a time. MSAs always run one at a time.
        progress: show progress over the sequences: a bar on a terminal (or in a notebook), else a log line every
            30 s (``esmfold_lite.progress_display``).
        max_depth, selection: MSA models only: rows kept per MSA and how they are chosen
            (``esmfold_lite.io.msa.select_rows``: ``"diverse"`` or ``"first"``; ``max_depth=None`` keeps all, e.g.
            for MSAs whose rows were selected already).

    Returns:
        ``Embeddings`` with tensors on the model's device, in the model's dtype.

    Raises:
        TypeError: a sequence that is not a string (an MSA given to a single-sequence model), ``layers`` not a list.
        ValueError: an empty or too long sequence, a character the model's vocabulary lacks (it would be read as
            ``<unk>``; the message names the sequence, the character and its position), a bad MSA or one wider or
            deeper than the model takes (naming it, ``msa_problem``), a layer out of range, logits without an LM
            head, contacts from a model loaded without its contact regression
            (``contact_head.check_contact_regression``; before any work).
    """
    if contacts:
        check_contact_regression(model)
    takes_msa = getattr(model, "takes_msa", False)
    if takes_msa:
        msas = _as_msas(sequences, max_depth, selection)
        texts = [msa.query for msa in msas]
    else:
        msas = None
        texts = [sequences] if isinstance(sequences, str) else list(sequences)
    if not texts:
        raise ValueError("no sequences to embed")
    if logits and getattr(model, "lm_head", None) is None:
        raise ValueError(
            f"this {type(model).__name__} has no masked-LM head (e.g. loaded from a transformers EsmModel folder), so "
            "it gives no logits; load a checkpoint saved with its LM head"
        )
    alphabet = model.alphabet
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"sequence {i} is a {type(text).__name__}, not a string"
                + ("; an MSA needs the MSA Transformer" if not takes_msa and isinstance(text, list | tuple) else "")
            )
        unknown = alphabet.unknown_characters(text)
        if unknown:
            shown = ", ".join(f"{char!a} at {position}" for char, position in unknown[:5])
            raise ValueError(
                f"sequence {i}: not in the vocabulary of {type(model).__name__} (position): {shown}"
                f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}; they would be read as <unk> (write X "
                "for an unknown residue; ':' chains are not read by a language model)"
            )
    if isinstance(layers, int):
        raise TypeError(f"layers must be a list of layer numbers, e.g. ({layers},), not one number")
    layers = list(dict.fromkeys(layers))
    resolved = {layer: resolve_layer(layer, model.num_layers) for layer in layers}
    lengths = [len(alphabet.encode(s)) for s in texts]
    if 0 in lengths:
        raise ValueError(f"sequence {lengths.index(0)} is empty")
    limit = getattr(model, "max_residues", None)
    for i, msa in enumerate(msas or ()):
        problem = msa_problem(model, msa)
        if problem:
            raise ValueError(f"MSA {i} ({msa.source}) has {problem}")
    too_long = [i for i, n in enumerate(lengths) if limit is not None and n > limit]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"sequence {i} has {lengths[i]} residues, more than the {limit} {type(model).__name__} can embed; split "
            "it into windows of at most that length, or use ESM-2 (no length limit)"
        )
    start = int(alphabet.prepend_bos)
    extra = start + int(alphabet.append_eos)
    device = next(model.parameters()).device

    per_residue: dict[int, list] = {layer: [None] * len(texts) for layer in layers}
    cls: dict[int, list] = {layer: [None] * len(texts) for layer in layers}
    contact_maps: list = [None] * len(texts)
    residue_logits: list = [None] * len(texts)
    if takes_msa:
        batches = [[i] for i in range(len(texts))]
    else:
        batches = token_budget_batches([n + extra for n in lengths], max_tokens_per_batch)
    with torch.no_grad(), Progress(len(texts), "embed", "msa" if takes_msa else "seq", progress) as bar:
        for batch in batches:
            if takes_msa:
                tokens = alphabet.batch_encode(msas[batch[0]].rows)[None]
            else:
                tokens = alphabet.batch_encode([texts[i] for i in batch])
            out = model(tokens.to(device), repr_layers=sorted(set(resolved.values())), return_contacts=contacts)
            for row, i in enumerate(batch):
                n = lengths[i]
                for layer, index in resolved.items():
                    hidden = _query_row(out["representations"][index][row], takes_msa)
                    per_residue[layer][i] = hidden[start : start + n].clone()
                    cls[layer][i] = hidden[0].clone()
                if contacts:
                    contact_maps[i] = out["contacts"][row, :n, :n].clone()
                if logits:
                    residue_logits[i] = _query_row(out["logits"][row], takes_msa)[start : start + n].clone()
            bar.update(len(batch))

    return Embeddings(
        sequences=texts,
        representations=per_residue,
        mean={layer: torch.stack([r.mean(0) for r in rows]) for layer, rows in per_residue.items()},
        cls={layer: torch.stack(rows) for layer, rows in cls.items()},
        contacts=contact_maps if contacts else None,
        logits=residue_logits if logits else None,
        msas=msas,
    )


def _query_row(x: torch.Tensor, takes_msa: bool) -> torch.Tensor:
    """One batch item's ``(T, ...)`` values: as is, or an MSA's ``(R, C, ...)`` cut to its query row."""
    return x[0] if takes_msa else x
