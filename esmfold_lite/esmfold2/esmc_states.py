"""The ESM C hidden states ESMFold2 reads (transformers' ``EsmFold2Model._compute_lm_hidden_states``).

Each row's protein tokens are laid out for the language model chain by chain, in increasing ``asym_id`` (within a
chain in token order), each chain wrapped as ``<cls> chain <eos>``::

    <cls> A1 A2 ... <eos> <cls> B1 B2 ... <eos> <pad> ...

ESM C runs on that with chain-aware attention (a token attends to its own chain only; the rotary positions run over
the whole row), and the states of every layer, ``[embeddings, block 1, ..., final norm(block n)]``, are scattered
back to the tokens they came from; other positions (padding) stay zero.

Protein chains of standard residues only: one token per residue. The reference also collapses an atom-tokenized
modified residue (several tokens sharing one ``(asym_id, residue_index)``) to one LM token; ESMFold2 here folds
protein chains of standard residues only, so such input, and any non-protein token, is refused.
"""

from __future__ import annotations

import torch

from esmfold_lite.lm.esmc import ESMC

PROTEIN = 0
"""``mol_type`` of a protein token (transformers' featurisation)."""


def lm_layout(asym_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where one row's protein tokens go in the LM input.

    Args:
        asym_id: ``(n,)`` chain id of each protein token, in token order.

    Returns:
        ``positions (n,)``: each token's LM position; ``chain_start (C,)``: the ``<cls>`` position of each chain, in
        increasing ``asym_id``; ``chain_length (C,)``: its number of tokens. The row is ``n + 2 C`` long.
    """
    _, chain, chain_length = torch.unique(asym_id, sorted=True, return_inverse=True, return_counts=True)
    rank = torch.empty_like(chain)
    rank[torch.argsort(chain, stable=True)] = torch.arange(chain.numel(), device=chain.device)
    before = torch.cumsum(chain_length, 0) - chain_length  # tokens in earlier chains
    chain_start = before + 2 * torch.arange(chain_length.numel(), device=chain.device)
    return rank + 1 + 2 * chain, chain_start, chain_length


def refuse_unsupported(
    asym_id: torch.Tensor, residue_index: torch.Tensor, mol_type: torch.Tensor, mask: torch.Tensor
) -> None:
    """ValueError for a batch row without tokens, with a non-protein token, or with two tokens of one residue."""
    for row in range(mask.shape[0]):
        present = mask[row]
        if not present.any():
            raise ValueError(f"row {row} of the batch has no token: every row needs a protein chain")
        if (mol_type[row][present] != PROTEIN).any():
            raise ValueError(f"row {row} holds a non-protein token: ESMFold2 here folds protein chains only")
        keys = torch.stack((asym_id[row][present], residue_index[row][present]), dim=1)
        if torch.unique(keys, dim=0).shape[0] != keys.shape[0]:
            raise ValueError(
                f"row {row} has several tokens for one residue (an atom-tokenized modified residue): "
                "only standard residues, one token each, are supported"
            )


@torch.no_grad()
def esmc_hidden_states(
    esmc: ESMC,
    input_ids: torch.Tensor,
    asym_id: torch.Tensor,
    residue_index: torch.Tensor,
    mol_type: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """ESM C states of every layer for each token.

    Args:
        esmc: the bundled ESM C (``lm_head`` not needed); its alphabet gives ``<cls>``, ``<eos>`` and ``<pad>``.
        input_ids: ``(B, N)`` long ESM C token ids of the residues.
        asym_id, residue_index, mol_type: ``(B, N)`` long chain ids, residue numbers and molecule types (0: protein).
        attention_mask: ``(B, N)`` bool, True at real tokens.

    Returns:
        ``(B, N, num_layers + 1, D)`` in the model's dtype; zero at padding.

    Raises:
        ValueError: a row without tokens, a non-protein token, or two tokens of one residue (see module docstring).
    """
    mask = attention_mask.bool()
    refuse_unsupported(asym_id, residue_index, mol_type, mask)
    alphabet = esmc.alphabet
    layouts = [lm_layout(asym_id[row][mask[row]]) for row in range(mask.shape[0])]
    width = max(int(positions.numel() + 2 * starts.numel()) for positions, starts, _ in layouts)
    batch = mask.shape[0]
    tokens = torch.full((batch, width), alphabet.padding_idx, dtype=torch.long, device=input_ids.device)
    sequence_id = torch.full_like(tokens, -1)  # padding: its own group
    for row, (positions, starts, lengths) in enumerate(layouts):
        tokens[row, positions] = input_ids[row][mask[row]]
        tokens[row, starts] = alphabet.cls_idx
        tokens[row, starts + lengths + 1] = alphabet.eos_idx
        chains = torch.arange(starts.numel(), device=tokens.device)
        sequence_id[row, : int(positions.numel() + 2 * starts.numel())] = chains.repeat_interleave(lengths + 2)

    out = esmc(tokens, repr_layers=range(esmc.num_layers + 1), sequence_id=sequence_id)
    states = torch.stack([out["representations"][layer] for layer in range(esmc.num_layers + 1)], dim=2)

    result = states.new_zeros(batch, mask.shape[1], *states.shape[2:])  # (B, N, layers + 1, D)
    for row, (positions, _, _) in enumerate(layouts):
        result[row, mask[row]] = states[row, positions]
    return result
