"""Unsupervised contact prediction from attention maps (Rao et al. 2021, "Transformer protein language models are
unsupervised structure learners"): a logistic regression over the symmetrized, APC-corrected maps of every head.

A model loaded without its regression weights (ESM-1v, released without them; an ESM-2 / ESM-1b / MSA Transformer
``.pt`` whose ``<stem>-contact-regression.pt`` was not beside it) has them filled with zeros by the checkpoint readers,
which would give 0.5 for every pair. ``ContactPredictionHead.has_regression`` records that: the readers report it with
a hint for their format (``weights.language_model``), which ``lm.load`` sets as ``regression_hint``; any other state
dict whose regression is all zero clears it as it is loaded. `check_contact_regression` turns a request for contacts
into a ``ValueError`` naming the model and the hint.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

ZERO_REGRESSION_HINT = (
    "the state dict loaded into its contact head had an all-zero regression (the filler for a checkpoint read without "
    "its contact regression); load weights that include it"
)


def symmetrize(x: torch.Tensor) -> torch.Tensor:
    """``x + x^T`` over the last two dimensions."""
    return x + x.transpose(-1, -2)


def average_product_correct(x: torch.Tensor) -> torch.Tensor:
    """Average product correction: ``x_ij - (sum_j x_ij)(sum_i x_ij) / sum_ij x_ij`` per map (last two dims)."""
    row_sums = x.sum(-1, keepdim=True)
    col_sums = x.sum(-2, keepdim=True)
    total = x.sum((-1, -2), keepdim=True)
    return x - row_sums * col_sums / total


class ContactPredictionHead(nn.Module):
    """Contact probabilities from the ``(B, layers, heads, T, T)`` attention maps of a language model.

    The ``<cls>`` and ``<eos>`` rows/columns are removed first (``<eos>`` positions are zeroed wherever they fall in a
    padded batch, then the last column/row is cut), so a ``(B, T, T)`` token map gives ``(B, T - 2, T - 2)``.
    ``regression`` maps the ``layers * heads`` features of each residue pair to one logit.

    Attributes:
        has_regression: whether the regression holds weights: True for a head built in memory; set when a state
            dict is loaded into it, False when its ``regression.weight`` is all zero (the filler of a checkpoint
            loaded without its contact regression, which would give every pair the same probability); also set False
            by ``lm.load`` when the checkpoint reader reported the regression missing.
        regression_hint: why the regression is missing and how to get it, for the error of
            `check_contact_regression` (``lm.load`` sets the reader's hint for the checkpoint's format).
    """

    def __init__(self, in_features: int, eos_idx: int, prepend_bos: bool = True, append_eos: bool = True):
        super().__init__()
        self.eos_idx = eos_idx
        self.prepend_bos = prepend_bos
        self.append_eos = append_eos
        self.regression = nn.Linear(in_features, 1)
        self.has_regression = True
        self.regression_hint = ZERO_REGRESSION_HINT

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(f"{prefix}regression.weight")
        if isinstance(weight, torch.Tensor) and not weight.is_meta:
            self.has_regression = bool(weight.detach().any())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: torch.Tensor, attentions: torch.Tensor) -> torch.Tensor:
        """``tokens: (B, T)``, ``attentions: (B, layers, heads, T, T)`` -> contact probabilities ``(B, L, L)``."""
        if self.append_eos:
            not_eos = tokens.ne(self.eos_idx).to(attentions.dtype)
            attentions = attentions * (not_eos[:, :, None] * not_eos[:, None, :])[:, None, None]
            attentions = attentions[..., :-1, :-1]
        if self.prepend_bos:
            attentions = attentions[..., 1:, 1:]
        features = rearrange(attentions, "b layer head i j -> b (layer head) i j")
        features = average_product_correct(symmetrize(features.to(self.regression.weight.dtype)))
        return torch.sigmoid(self.regression(rearrange(features, "b f i j -> b i j f")).squeeze(-1))


def check_contact_regression(model: nn.Module) -> None:
    """Raise ``ValueError`` when ``model.contact_head`` was loaded without regression weights (see the module
    docstring), naming the model and the fix (``contact_head.regression_hint``)."""
    head = getattr(model, "contact_head", None)
    if head is None or getattr(head, "has_regression", True):
        return
    raise ValueError(
        f"{type(model).__name__} was loaded without contact regression weights, so it cannot predict contacts (every "
        f"pair would get 0.5): {head.regression_hint}"
    )
