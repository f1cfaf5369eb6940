"""ESMFold2's confidence head: from the trunk's states and one structure per sample, pLDDT, PAE, PDE, resolved-atom
logits and pTM / ipTM.

The head rebuilds a pair representation (the trunk's pair states, the single inputs projected to pairs and the
binned distances between the tokens' representative atoms in the sampled structure), refines it with its own
pair-update stack, pools it to a single representation, and reads the heads off both. Parameter names are
transformers' ``EsmFold2ConfidenceHead``'s, so its state dict loads as it is. The numbers derived from the logits are
in ``confidence_scores``. The pair-sized steps outside the stack run ``chunk_size`` rows at a time
(``fold.chunking.chunk_apply``): the outer product, the normed pair states and the distance embedding never
exist whole.

Shapes: B batch, S samples, B' = B × S (sample-major within each batch item, as ``repeat_interleave``), N tokens,
A atoms; c_i = ``single_inputs_size``, c_z = ``pairwise_hidden_size``, c_s = ``hidden_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from esmfold_lite.esmfold2 import confidence_scores as scores
from esmfold_lite.esmfold2.atom_transformer import gather_token_to_atom
from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.layers import LayerNorm
from esmfold_lite.esmfold2.pair_stack import PairUpdateStack
from esmfold_lite.fold.chunking import chunk_apply
from esmfold_lite.fold.heads import plddt_from_logits


@dataclass
class ConfidenceOutput:
    """The confidence head's outputs for B' = B × S structures. pLDDT values are 0–100, PAE/PDE in Å.

    Attributes:
        plddt_logits: (B', A, num_plddt_bins).
        plddt_per_atom: (B', A).
        plddt: (B', N) mean over each token's atoms.
        plddt_ca: (B', N) the token's representative atom (``distogram_atom_idx``).
        complex_plddt: (B',) mean over all existing atoms.
        complex_iplddt: (B',) mean over the atoms of interface tokens.
        resolved_logits: (B', A, 2) [unresolved, resolved].
        pae_logits, pde_logits: (B', N, N, bins).
        pae, pde: (B', N, N); pae[b, i, j] is the error of token j aligned on token i.
        ptm, iptm: (B',).
        pair_chains_iptm: (B', K, K), K = max(asym_id) + 1.
    """

    plddt_logits: Tensor
    plddt_per_atom: Tensor
    plddt: Tensor
    plddt_ca: Tensor
    complex_plddt: Tensor
    complex_iplddt: Tensor
    resolved_logits: Tensor
    pae_logits: Tensor
    pae: Tensor
    pde_logits: Tensor
    pde: Tensor
    ptm: Tensor
    iptm: Tensor
    pair_chains_iptm: Tensor


class ConfidenceInputEmbedder(nn.Module):
    """The head's base pair representation: the normed trunk pair states plus the relative-position and bond
    encodings, and the normed single inputs projected onto rows, columns and (as an outer product) both; built
    ``chunk_size`` rows at a time, so the outer product never exists whole."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        c_i, c_z = config.single_inputs_size, config.pairwise_hidden_size
        self.single_inputs_norm = LayerNorm(c_i)
        self.pair_norm = LayerNorm(c_z)
        self.single_to_pair = nn.Linear(c_i, c_z, bias=False)
        self.single_to_pair_transpose = nn.Linear(c_i, c_z, bias=False)
        self.single_to_pair_prod_in1 = nn.Linear(c_i, c_z, bias=False)
        self.single_to_pair_prod_in2 = nn.Linear(c_i, c_z, bias=False)
        self.single_to_pair_prod_out = nn.Linear(c_z, c_z, bias=False)
        self.chunk_size = config.chunk_size or None

    def forward(
        self,
        single_inputs: Tensor,
        pair_states: Tensor,
        relative_position_encoding: Tensor,
        token_bonds_encoding: Tensor,
    ) -> Tensor:
        """single_inputs (B, N, c_i); pair_states and both encodings (B, N, N, c_z) -> (B, N, N, c_z)."""
        s = self.single_inputs_norm(single_inputs)
        columns = self.single_to_pair_transpose(s)[:, None, :]
        right = self.single_to_pair_prod_in2(s)[:, None, :]

        def rows(z: Tensor, relative: Tensor, bonds: Tensor, s_rows: Tensor) -> Tensor:
            z = self.pair_norm(z) + relative + bonds
            z = z + self.single_to_pair(s_rows)[:, :, None] + columns
            return z + self.single_to_pair_prod_out(self.single_to_pair_prod_in1(s_rows)[:, :, None] * right)

        inputs = (pair_states, relative_position_encoding, token_bonds_encoding, s)
        return chunk_apply(rows, inputs, (1, 1, 1, 1), self.chunk_size, out_dim=1)


class RowAttentionPooling(nn.Module):
    """Single representation from pair rows: a softmax over the real tokens j of a score of z_ij weights the mean of
    row i, then a projection to c_s."""

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        self.attn_proj = nn.Linear(config.pairwise_hidden_size, 1, bias=False)
        self.out_proj = nn.Linear(config.pairwise_hidden_size, config.hidden_size, bias=False)

    def forward(self, pair_states: Tensor, token_mask: Tensor) -> Tensor:
        """pair_states (B', N, N, c_z), token_mask (B', N) bool -> (B', N, c_s)."""
        logits = self.attn_proj(pair_states).squeeze(-1)
        logits = logits.masked_fill(~token_mask[:, None, :], torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1, dtype=torch.float32).to(logits.dtype)
        return self.out_proj((weights[:, :, None, :] @ pair_states).squeeze(-2))


def per_slot_linear(x: Tensor, weight: Tensor, slot: Tensor) -> Tensor:
    """Each atom's features times the weight of its slot (its index within the token).

    Args:
        x: (B', A, c_s).
        weight: (slots, c_s, out).
        slot: (B', A) long, each < slots.
    Returns:
        (B', A, out).
    """
    out = x.new_empty(*x.shape[:-1], weight.shape[-1])
    for k in slot.unique().tolist():
        chosen = slot == k
        out[chosen] = x[chosen] @ weight[k]
    return out


class ConfidenceHead(nn.Module):
    """pLDDT, PAE, PDE and resolved logits, and the scores derived from them, for S sampled structures."""

    boundaries: Tensor

    def __init__(self, config: EsmFold2Config) -> None:
        super().__init__()
        head = config.confidence_head
        c_s, c_z = config.hidden_size, config.pairwise_hidden_size
        self.eps = head.eps
        self.chunk_size = config.chunk_size or None
        self.register_buffer(
            "boundaries", torch.linspace(head.min_dist, head.max_dist, head.distogram_bins - 1, dtype=torch.float32)
        )
        self.dist_bin_pairwise_embed = nn.Embedding(head.distogram_bins, c_z)
        self.input_embedder = ConfidenceInputEmbedder(config)
        self.row_attention_pooling = RowAttentionPooling(config)
        self.folding_trunk = PairUpdateStack(config, head.num_hidden_layers)
        self.plddt_layernorm = LayerNorm(c_s)
        self.plddt_weight = nn.Parameter(torch.zeros(config.max_atoms_per_token, c_s, head.num_plddt_bins))
        self.pae_layernorm = LayerNorm(c_z)
        self.pae_head = nn.Linear(c_z, head.num_pae_bins, bias=False)
        self.pde_layernorm = LayerNorm(c_z)
        self.pde_head = nn.Linear(c_z, head.num_pde_bins, bias=False)
        self.resolved_layernorm = LayerNorm(c_s)
        self.resolved_weight = nn.Parameter(torch.zeros(config.max_atoms_per_token, c_s, 2))

    def forward(
        self,
        single_inputs: Tensor,
        pair_states: Tensor,
        coords: Tensor,
        distogram_atom_idx: Tensor,
        token_mask: Tensor,
        atom_to_token: Tensor,
        atom_mask: Tensor,
        asym_id: Tensor,
        relative_position_encoding: Tensor,
        token_bonds_encoding: Tensor,
        num_samples: int = 1,
    ) -> ConfidenceOutput:
        """Confidence of each sampled structure.

        Args:
            single_inputs: (B, N, c_i) the trunk's single inputs.
            pair_states: (B, N, N, c_z) the trunk's final pair states.
            coords: (B', A, 3) or (B, S, A, 3) the sampled atom coordinates, Å.
            distogram_atom_idx: (B, N) each token's representative atom.
            token_mask: (B, N) bool, True for real tokens.
            atom_to_token: (B, A) each atom's token.
            atom_mask: (B, A) 1 for real atoms.
            asym_id: (B, N) chain index 0..K-1.
            relative_position_encoding, token_bonds_encoding: (B, N, N, c_z) the trunk's pair encodings.
            num_samples: S.
        """

        def per_sample(t: Tensor) -> Tensor:
            return t.repeat_interleave(num_samples, 0)

        z = self.input_embedder(single_inputs, pair_states, relative_position_encoding, token_bonds_encoding)
        z, token_mask, asym_id = per_sample(z), per_sample(token_mask.bool()), per_sample(asym_id)
        atom_to_token, atom_mask = per_sample(atom_to_token), per_sample(atom_mask).float()
        rep_idx = per_sample(distogram_atom_idx)

        coords = coords.reshape(-1, *coords.shape[-2:])
        rep_coords = torch.gather(coords, 1, rep_idx[..., None].expand(-1, -1, 3))
        rep_distances = torch.cdist(rep_coords, rep_coords, compute_mode="donot_use_mm_for_euclid_dist")
        distance_bins = torch.bucketize(rep_distances, self.boundaries)
        z = chunk_apply(
            lambda z_rows, bin_rows: z_rows + self.dist_bin_pairwise_embed(bin_rows),
            (z, distance_bins),
            (1, 1),
            self.chunk_size,
            out_dim=1,
            out=None if torch.is_grad_enabled() else z,
        )

        dtype = self.pae_head.weight.dtype
        pair_mask = token_mask[:, :, None].float() * token_mask[:, None, :].float()
        # As the reference, the stack's output is added to its input (the stack updates its argument in place).
        z = self.folding_trunk(z.to(dtype, copy=True), pair_mask).add_(z)
        single = self.row_attention_pooling(z, token_mask)

        single_at_atoms = gather_token_to_atom(single, atom_to_token)
        slot = scores.intra_token_index(atom_to_token).clamp(max=self.plddt_weight.shape[0] - 1)
        plddt_logits = per_slot_linear(self.plddt_layernorm(single_at_atoms), self.plddt_weight, slot)
        resolved_logits = per_slot_linear(self.resolved_layernorm(single_at_atoms), self.resolved_weight, slot)
        pae_logits, pde_logits = chunk_apply(
            lambda z_rows: (self.pae_head(self.pae_layernorm(z_rows)), self.pde_head(self.pde_layernorm(z_rows))),
            (z,),
            (1,),
            self.chunk_size,
            out_dim=1,
        )

        plddt_per_atom = plddt_from_logits(plddt_logits)
        interface = gather_token_to_atom(scores.interface_tokens(rep_distances, asym_id)[..., None], atom_to_token)
        ptm, iptm, pair_chains_iptm = scores.ptm_iptm(
            scores.tm_terms(pae_logits, token_mask), token_mask, asym_id, self.eps
        )
        return ConfidenceOutput(
            plddt_logits=plddt_logits,
            plddt_per_atom=plddt_per_atom,
            plddt=scores.token_plddt(plddt_per_atom, atom_to_token, atom_mask, z.shape[1]),
            plddt_ca=plddt_per_atom.gather(1, rep_idx),
            complex_plddt=scores.weighted_mean(plddt_per_atom, atom_mask, self.eps),
            complex_iplddt=scores.weighted_mean(plddt_per_atom, atom_mask * interface.squeeze(-1), self.eps),
            resolved_logits=resolved_logits,
            pae_logits=pae_logits,
            pae=scores.expected_distance_error(pae_logits),
            pde_logits=pde_logits,
            pde=scores.expected_distance_error(pde_logits),
            ptm=ptm,
            iptm=iptm,
            pair_chains_iptm=pair_chains_iptm,
        )
