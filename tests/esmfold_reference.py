"""Test helpers: tiny transformers ``EsmForProteinFolding`` models with every parameter randomized, written in the
official formats (fair-esm ``.pt`` pair with omegaconf configs, transformers folder)."""

from __future__ import annotations

from pathlib import Path

import torch
from fair_esm_files import save_fair_lm
from randomize import randomize_
from transformers import EsmConfig, EsmForProteinFolding

from esmfold_lite.weights.esm2_format import hf_to_esm2_state_dict
from esmfold_lite.weights.esmfold_format import HF_STRUCTURE_FIELDS


def tiny_hf_esmfold(
    num_blocks: int = 2,
    sm_blocks: int = 2,
    c_s: int = 32,
    c_z: int = 16,
    lm_layers: int = 2,
    lm_dim: int = 32,
    lm_heads: int = 4,
    max_recycles: int = 4,
    seed: int = 0,
    full_width: bool = False,
    lddt_head_hid_dim: int = 16,
    device: torch.device | str = "cpu",
) -> EsmForProteinFolding:
    """A randomized transformers ESMFold (fp32 LM, eval mode, its own chunking off), built on ``device``.

    ``full_width``: esmfold_v1's trunk and structure-module widths (c_s=1024, c_z=128, head widths 32, IPA 12 heads,
    32 position bins) instead of the tiny ones; ``c_s``/``c_z`` are then ignored.
    """
    if full_width:
        structure = dict(num_blocks=sm_blocks)
        widths = dict(sequence_state_dim=1024, pairwise_state_dim=128, sequence_head_width=32, pairwise_head_width=32,
                      position_bins=32)  # fmt: skip
    else:
        structure = dict(
            sequence_dim=24, pairwise_dim=c_z, ipa_dim=8, resnet_dim=16, num_heads_ipa=3, num_qk_points=4,
            num_v_points=8, num_blocks=sm_blocks, dropout_rate=0.1,
        )  # fmt: skip
        widths = dict(sequence_state_dim=c_s, pairwise_state_dim=c_z, sequence_head_width=16, pairwise_head_width=8,
                      position_bins=8)  # fmt: skip
    trunk = dict(num_blocks=num_blocks, max_recycles=max_recycles, chunk_size=None, structure_module=structure,
                 **widths)  # fmt: skip
    config = EsmConfig(
        vocab_size=33, hidden_size=lm_dim, num_hidden_layers=lm_layers, num_attention_heads=lm_heads,
        intermediate_size=4 * lm_dim, layer_norm_eps=1e-5, position_embedding_type="rotary", token_dropout=True,
        pad_token_id=1, mask_token_id=32, is_folding_model=True, max_position_embeddings=1026,
        esmfold_config=dict(trunk=trunk, fp16_esm=False, lddt_head_hid_dim=lddt_head_hid_dim),
    )  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = EsmForProteinFolding(config)
    return randomize_(model, seed).float().eval()


def full_size_hf_esmfold(seed: int = 0, device: torch.device | str = "cpu") -> EsmForProteinFolding:
    """esmfold_v1's shape, randomized: ESM-2 3B (36 layers × 2560, 40 heads), 48 full-width trunk blocks, 8
    structure-module blocks, pLDDT head width 128; about 3.5 B parameters (14 GB in fp32)."""
    return tiny_hf_esmfold(
        num_blocks=48, sm_blocks=8, lm_layers=36, lm_dim=2560, lm_heads=40, max_recycles=4, seed=seed,
        full_width=True, lddt_head_hid_dim=128, device=device,
    )  # fmt: skip


def _fair_cfg(model: EsmForProteinFolding) -> dict:
    trunk = model.config.esmfold_config.trunk.to_dict()
    structure = {HF_STRUCTURE_FIELDS.get(k, k): v for k, v in dict(trunk.pop("structure_module")).items()}
    keep = ("num_blocks", "sequence_state_dim", "pairwise_state_dim", "sequence_head_width", "pairwise_head_width",
            "position_bins", "dropout", "layer_drop", "cpu_grad_checkpoint", "max_recycles", "chunk_size")  # fmt: skip
    trunk = {k: trunk[k] for k in keep}
    trunk["structure_module"] = {k: v for k, v in structure.items() if k in set(HF_STRUCTURE_FIELDS.values()) | {
        "dropout_rate", "trans_scale_factor", "epsilon", "inf"}}  # fmt: skip
    return {
        "_name": "ESMFoldConfig",
        "trunk": trunk,
        "lddt_head_hid_dim": model.config.esmfold_config.lddt_head_hid_dim,
    }


def write_fair_esmfold(model: EsmForProteinFolding, folder: Path, structured: bool = False) -> tuple[Path, Path]:
    """The official pair: ``esmfold_3B_v1.pt`` (no ``esm.*`` keys) and ``esm2_t36_3B_UR50D.pt`` beside it.

    ``structured``: the ESMFold cfg as ``OmegaConf.structured(ESMFoldConfig(...))``, whose pickle names fair-esm's
    config dataclasses, instead of ``OmegaConf.create`` of a plain dict.
    """
    # here, not at the top: benchmarks/bench_gpu.py builds its model with this module where omegaconf is missing
    from fair_esm_configs import fair_esm_config_classes, structured_esmfold_cfg
    from omegaconf import OmegaConf

    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    trunk = {k: v for k, v in state.items() if not k.startswith("esm.")}
    esmfold_path = folder / "esmfold_3B_v1.pt"
    if structured:
        with fair_esm_config_classes():
            torch.save({"cfg": {"model": structured_esmfold_cfg(_fair_cfg(model))}, "model": trunk}, esmfold_path)
    else:
        torch.save({"cfg": {"model": OmegaConf.create(_fair_cfg(model))}, "model": trunk}, esmfold_path)

    lm = hf_to_esm2_state_dict({k: v for k, v in state.items() if k.startswith("esm.")})
    c = model.config
    # transformers' ESMFold has no masked-LM head; the official LM file does (unused by folding): random values
    head = randomize_(torch.nn.ModuleDict({"dense": torch.nn.Linear(c.hidden_size, c.hidden_size),
                                           "layer_norm": torch.nn.LayerNorm(c.hidden_size)}), seed=1)  # fmt: skip
    lm.update({f"lm_head.{k}": v for k, v in head.state_dict().items()})
    lm["lm_head.weight"] = lm["embed_tokens.weight"]
    lm["lm_head.bias"] = torch.zeros(c.vocab_size)
    lm_cfg = {"encoder_layers": c.num_hidden_layers, "encoder_embed_dim": c.hidden_size,
              "encoder_attention_heads": c.num_attention_heads, "token_dropout": True}  # fmt: skip
    lm_path = save_fair_lm(folder / "esm2_t36_3B_UR50D.pt", lm, {"cfg": {"model": OmegaConf.create(lm_cfg)}})
    return esmfold_path, lm_path
