"""ESMFold2 (Biohub, 2026): ESM C hidden states, a looping pair trunk (parcae), a diffusion structure head and a
confidence head, in plain PyTorch with parameter names that map 1:1 onto transformers' ``EsmFold2Model`` state dict.

One idea per module: ``config`` (sizes from a transformers config dict), ``layers`` (shared primitives),
``input_features`` (the one-hot encoding of the raw features), ``relative_position`` (the relative-position pair
encoding), ``input_embedder`` (atom encoder + token features -> single inputs and initial pair), ``lm_encoder`` (ESM C
states -> pair), ``pair_stack`` (triangle updates), ``parcae`` (the loop recurrence), ``trunk`` (the loops and the
distogram head), ``atom_transformer`` (sliding-window atom encoder and decoder), ``diffusion_transformer`` (pair-biased
token transformer), ``diffusion_conditioning`` (pair and noise-level conditioning), ``diffusion_module`` (one denoiser
call), ``sampler`` (the diffusion sampling loop, drawing its noise and rotations in the reference's order),
``confidence_head`` (pLDDT/PAE/PDE logits on sampled structures), ``confidence_scores`` (pLDDT, PAE, PDE, pTM,
ipTM from those logits), ``esmc_states`` (ESM C's hidden states of every layer per token, each chain wrapped),
``model`` (the whole fold: ``ESMFold2``, features -> sampled coordinates and their confidence).
"""
