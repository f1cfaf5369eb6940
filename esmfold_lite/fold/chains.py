"""Sequences (``"SEQA:SEQB"`` for complexes) → padded ESMFold inputs, the way the original joins chains.

Which sequences are accepted is `esmfold_lite.sequences`' rule (``X B Z U O`` fold as unknown, ``X``).

Chains are joined by a poly-G linker (25 residues) and each chain's residue index is shifted by
``residue_index_offset`` (512) times its chain number, so the trunk's relative-position embedding sees the chains as
far apart. The linker is marked in ``linker_mask`` so it can be cut from every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from esmfold_lite.geometry.residue_constants import restype_order_with_x
from esmfold_lite.sequences import CHAIN_SEPARATOR

DEFAULT_LINKER = "G" * 25
DEFAULT_RESIDUE_INDEX_OFFSET = 512


@dataclass
class EncodedBatch:
    """Padded model inputs for B sequences of up to L residues (linkers included)."""

    aatype: torch.Tensor  # (B, L) long, AF2 restype order, 20 = X
    mask: torch.Tensor  # (B, L) float, 1 for real residues (linker included)
    residue_index: torch.Tensor  # (B, L) long
    linker_mask: torch.Tensor  # (B, L) float, 0 on linker residues and padding
    chain_index: torch.Tensor  # (B, L) long, -1 on padding; the linker belongs to the chain before it


def encode_sequence(
    sequence: str, linker: str = DEFAULT_LINKER, residue_index_offset: int = DEFAULT_RESIDUE_INDEX_OFFSET
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One (possibly multi-chain) sequence → ``(aatype, residue_index, linker_mask, chain_index)``, each (L,)."""
    unknown = restype_order_with_x["X"]
    aatype: list[int] = []
    residue_index: list[int] = []
    linker_mask: list[float] = []
    chain_index: list[int] = []
    for i, chain in enumerate(sequence.upper().split(CHAIN_SEPARATOR)):
        if i > 0:
            start = len(aatype)
            aatype += [restype_order_with_x["G"]] * len(linker)
            residue_index += [start + k + (i - 1) * residue_index_offset for k in range(len(linker))]
            linker_mask += [0.0] * len(linker)
            chain_index += [i - 1] * len(linker)
        start = len(aatype)
        aatype += [restype_order_with_x.get(aa, unknown) for aa in chain]
        residue_index += [start + k + i * residue_index_offset for k in range(len(chain))]
        linker_mask += [1.0] * len(chain)
        chain_index += [i] * len(chain)
    return (
        torch.tensor(aatype, dtype=torch.long),
        torch.tensor(residue_index, dtype=torch.long),
        torch.tensor(linker_mask, dtype=torch.float32),
        torch.tensor(chain_index, dtype=torch.long),
    )


def _pad(rows: Sequence[torch.Tensor], value: float) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def encode_batch(
    sequences: Sequence[str],
    linker: str = DEFAULT_LINKER,
    residue_index_offset: int = DEFAULT_RESIDUE_INDEX_OFFSET,
) -> EncodedBatch:
    """Encode and right-pad a batch of sequences."""
    encoded = [encode_sequence(s, linker, residue_index_offset) for s in sequences]
    aatype, residue_index, linker_mask, chain_index = zip(*encoded, strict=True)
    return EncodedBatch(
        aatype=_pad(aatype, 0),
        mask=_pad([torch.ones(len(a)) for a in aatype], 0.0),
        residue_index=_pad(residue_index, 0),
        linker_mask=_pad(linker_mask, 0.0),
        chain_index=_pad(chain_index, -1),
    )
