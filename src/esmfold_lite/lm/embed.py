"""Embeddings of raw sequences from any ESM language model.

Works with every model that has ESM-2's ``forward(tokens, repr_layers, need_head_weights, return_contacts)``, a
``num_layers`` attribute and an ``alphabet`` (``esmfold_lite.alphabet.Alphabet``). Sequences are sorted by length and
packed into batches under a token budget; per-sequence results are cut out of the padded batch and put back in input
order, so they equal (up to float rounding) one-sequence runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass
class Embeddings:
    """Embeddings of ``B`` sequences; every dict is keyed by the layer values as requested (e.g. ``-1``).

    Attributes:
        sequences: the input sequences, in input order.
        representations: ``{layer: [ (L_i, D) ]}`` per-residue vectors, without ``<cls>``/``<eos>``.
        mean: ``{layer: (B, D)}`` mean over each sequence's residues.
        cls: ``{layer: (B, D)}`` the ``<cls>`` token's vector.
        contacts: ``[ (L_i, L_i) ]`` contact probabilities, or ``None`` when not asked for.
    """

    sequences: list[str]
    representations: dict[int, list[torch.Tensor]]
    mean: dict[int, torch.Tensor]
    cls: dict[int, torch.Tensor]
    contacts: list[torch.Tensor] | None = None


def resolve_layer(layer: int, num_layers: int) -> int:
    """Layer index in ``0..num_layers`` (0 = embeddings); negative values count from the end (-1 = last)."""
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(f"layer {layer} is out of range for a {num_layers}-layer model (use 0..{num_layers} or -1)")
    return resolved


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


def embed(
    model: nn.Module,
    sequences: str | Sequence[str],
    layers: Sequence[int] = (-1,),
    contacts: bool = False,
    max_tokens_per_batch: int | None = None,
    progress: bool = False,
) -> Embeddings:
    """Embed sequences with a language model, without gradients, on the model's device.

    Args:
        model: an ESM language model (see the module docstring).
        sequences: one sequence or a list; residue letters (any case), special tokens such as ``<mask>`` inline.
        layers: layers to return: 0 = token embeddings, ``num_layers`` or -1 = the last (after its final LayerNorm).
        contacts: also predict contact maps.
        max_tokens_per_batch: budget on the padded batch size ``count * (longest + 2)`` in tokens; ``None`` runs
            one sequence at a time.
        progress: show a progress bar (tqdm) over the sequences.

    Returns:
        ``Embeddings`` with tensors on the model's device, in the model's dtype.
    """
    sequences = [sequences] if isinstance(sequences, str) else list(sequences)
    if not sequences:
        raise ValueError("no sequences to embed")
    alphabet = model.alphabet
    layers = list(dict.fromkeys(layers))
    resolved = {layer: resolve_layer(layer, model.num_layers) for layer in layers}
    lengths = [len(alphabet.encode(s)) for s in sequences]
    if 0 in lengths:
        raise ValueError(f"sequence {lengths.index(0)} is empty")
    limit = getattr(model, "max_residues", None)
    too_long = [i for i, n in enumerate(lengths) if limit is not None and n > limit]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"sequence {i} has {lengths[i]} residues, more than the {limit} {type(model).__name__} can embed; "
            "split it into windows of at most that length, or use ESM-2 (no length limit)"
        )
    start = int(alphabet.prepend_bos)
    extra = start + int(alphabet.append_eos)
    device = next(model.parameters()).device

    per_residue: dict[int, list] = {layer: [None] * len(sequences) for layer in layers}
    cls: dict[int, list] = {layer: [None] * len(sequences) for layer in layers}
    contact_maps: list = [None] * len(sequences)
    batches = token_budget_batches([n + extra for n in lengths], max_tokens_per_batch)
    with torch.no_grad(), tqdm(total=len(sequences), unit="seq", disable=not progress) as bar:
        for batch in batches:
            tokens = alphabet.batch_encode([sequences[i] for i in batch]).to(device)
            out = model(tokens, repr_layers=sorted(set(resolved.values())), return_contacts=contacts)
            for row, i in enumerate(batch):
                n = lengths[i]
                for layer, index in resolved.items():
                    hidden = out["representations"][index][row]
                    per_residue[layer][i] = hidden[start : start + n].clone()
                    cls[layer][i] = hidden[0].clone()
                if contacts:
                    contact_maps[i] = out["contacts"][row, :n, :n].clone()
            bar.update(len(batch))

    return Embeddings(
        sequences=sequences,
        representations=per_residue,
        mean={layer: torch.stack([r.mean(0) for r in rows]) for layer, rows in per_residue.items()},
        cls={layer: torch.stack(rows) for layer, rows in cls.items()},
        contacts=contact_maps if contacts else None,
    )
