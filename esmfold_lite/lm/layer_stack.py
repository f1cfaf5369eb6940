"""fair-esm's layer loop, shared by every ESM language model's ``forward`` (``EncoderLanguageModel``: ESM-2 and
ESM-1b/1v; ``MSATransformer``; ``ESMC``).

The layers run in order; the hidden states of the layers asked for (``lm.embed.requested_layers``: 0 = the input
vectors, ``num_layers`` = the last layer's output after the final LayerNorm) are kept, and, when head weights are
asked for, every layer's attention maps, stacked over the layers. After each layer the fold's progress listener, if
any, is told (``fold_progress``). `zero_padded` masks stacked maps the way fair-esm returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from esmfold_lite.fold_progress import LM_LAYER, step_done


@dataclass
class StackOutput:
    """What `run_layers` kept.

    Attributes:
        last: the last layer's output after the final LayerNorm, ``(..., D)``.
        representations: ``{layer: (..., D)}`` keyed by the layer values as asked for (``-1`` and ``num_layers``
            may both be keys of the last layer).
        maps: one tensor per attention map a layer returns after its output (ESM-2: the attention; MSA
            Transformer: row, then column attention), each stacked over the layers on dim 1:
            ``(B, num_layers, ...)``; empty unless maps were kept.
    """

    last: torch.Tensor
    representations: dict[int, torch.Tensor]
    maps: tuple[torch.Tensor, ...]


def run_layers(
    layers: nn.ModuleList,
    x: torch.Tensor,
    final_norm: nn.Module,
    wanted: dict[int, list[int]],
    *layer_args: object,
    keep_maps: bool,
) -> StackOutput:
    """Run ``x`` through ``layers`` (each called as ``layer(x, *layer_args)`` and returning ``(x, *maps)``), then
    ``final_norm``.

    Args:
        layers: the model's layers, in order.
        x: the input vectors ``(..., D)`` (the model's embedding of its tokens).
        final_norm: the LayerNorm after the last layer.
        wanted: ``{absolute layer: [keys asked for it]}`` (``lm.embed.requested_layers``, resolved by the caller
            before the input is embedded, so a bad layer is refused first).
        layer_args: passed to every layer after ``x`` (padding mask, ``need_weights``, ...).
        keep_maps: keep and stack the layers' attention maps.
    """
    num_layers = len(layers)
    hidden = {0: x} if 0 in wanted else {}
    per_layer = []
    for index, layer in enumerate(layers, start=1):
        x, *maps = layer(x, *layer_args)
        if index in wanted and index < num_layers:
            hidden[index] = x
        if keep_maps:
            per_layer.append(maps)
        step_done(LM_LAYER, index, num_layers)  # a progress listener, if any (``fold_progress``)
    x = final_norm(x)
    hidden[num_layers] = x
    representations = {key: hidden[index] for index, keys in wanted.items() for key in keys}
    stacked = tuple(torch.stack(kind, dim=1) for kind in zip(*per_layer, strict=True))
    return StackOutput(x, representations, stacked)


def zero_padded(attentions: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Stacked attention maps ``(B, layers, H, T, T)`` with the rows and columns of padded tokens zeroed.

    ``padding_mask``: ``(B, T)`` bool, True at padding; None: nothing is padded (the maps are returned as they are).
    """
    if padding_mask is None:
        return attentions
    keep = ~padding_mask
    return attentions * (keep[:, :, None] & keep[:, None, :]).to(attentions.dtype)[:, None, None]
