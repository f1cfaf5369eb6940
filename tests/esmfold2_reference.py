"""transformers' ESMFold2 (the reference) at a tiny size, for the ``test_esmfold2_*`` parity tests.

``tiny_reference_config()`` is a transformers ``EsmFold2Config`` whose every width is small but keeps the
reference's relations (single_inputs_size = atom output + 2·num_res_types + 1, the atom heads wide enough for the
3D rotary pairs); ``chunk_size`` is smaller than the test lengths so the reference's own chunking runs.
"""

from __future__ import annotations

from typing import Any

from transformers.models.esmfold2.configuration_esmfold2 import EsmFold2Config as ReferenceConfig

NUM_RES_TYPES = 33


def tiny_reference_config(**overrides: Any) -> ReferenceConfig:
    """A small transformers ``EsmFold2Config``; ``overrides`` replace top-level fields."""
    atom = dict(
        hidden_size=32,
        output_dim=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        num_spatial_rope_pairs_per_axis=1,
        num_uid_rope_pairs=3,
    )
    settings: dict[str, Any] = dict(
        hidden_size=24,
        pairwise_hidden_size=16,
        single_inputs_size=24 + 2 * NUM_RES_TYPES + 1,
        pair_transition_intermediate_size=32,
        sliding_window=8,
        chunk_size=3,
        num_relative_residx_bins=4,
        num_loops=2,
        max_atomic_number=16,
        char_vocab_size=8,
        folding_trunk_num_hidden_layers=2,
        parcae_num_coda_layers=1,
        atom_encoder=atom,
        structure_head=dict(
            num_distogram_bins=10,
            diffusion_module=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                fourier_dim=16,
                intermediate_size=48,
                pair_intermediate_size=24,
                atom_encoder={**atom, "output_dim": 32},
            ),
        ),
        confidence_head=dict(num_hidden_layers=1, num_plddt_bins=5, num_pde_bins=6, num_pae_bins=7, distogram_bins=9),
        msa_encoder=dict(enabled=False),
        lm_encoder=dict(num_hidden_layers=1),
        esmc_config=dict(
            model_type="esmc",
            hidden_size=20,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=40,
            vocab_size=64,
        ),
    )
    settings.update(overrides)
    return ReferenceConfig(**settings)
