"""A tiny ESMFold with every parameter randomized, written in the official fair-esm format
(``esmfold-lite weights make-random``): to check an install, a cluster (``fold-proteome`` on Ray) or a batch
pipeline end to end before the 8.4 GB download of the real weights.

Its structures are noise, so its config carries ``esmfold_lite_random_weights: true``: loading it logs a warning, the
model's ``random_weights`` is True, and every ``Prediction`` and file written from one says so (a REMARK in PDB, the
title and a remark in mmCIF, ``"random_weights": true`` in the JSON, a banner in the report). ``esmfold-lite weights
convert`` keeps the field.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from esmfold_lite.fold.config import ESMFoldConfig, StructureModuleConfig, TrunkConfig
from esmfold_lite.fold.esmfold import ESMFold
from esmfold_lite.lm.esm2 import ESM2, ESM2Config
from esmfold_lite.weights.fair_esm_writer import save_fair_esmfold

RANDOM_LM = ESM2Config(num_layers=2, embed_dim=32, attention_heads=4)
RANDOM_ESMFOLD = ESMFoldConfig(
    trunk=TrunkConfig(
        num_blocks=2, sequence_state_dim=32, pairwise_state_dim=16, sequence_head_width=16, pairwise_head_width=8,
        position_bins=8,
        structure_module=StructureModuleConfig(
            c_s=24, c_z=16, c_ipa=8, c_resnet=16, no_heads_ipa=3, no_qk_points=4, no_v_points=8, no_blocks=2
        ),
    ),
    lddt_head_hid_dim=16,
    esmfold_lite_random_weights=True,
)  # fmt: skip
"""The sizes: about 0.1 M parameters (the LM 2 layers x 32, the trunk 2 blocks): a protein folds in seconds on a CPU;
``esmfold_lite_random_weights`` set."""


def randomize_(module: nn.Module, seed: int | torch.Generator = 0) -> nn.Module:
    """Every parameter of ``module`` drawn anew, in place: matrices ~ N(0, 1/fan_in), LayerNorm weights
    1 + 0.1·N(0, 1), other vectors 0.1·N(0, 1). ESMFold zero-initialises many output layers; random ones make every
    layer take part, as a real model's do (and a zero layer would hide a miswired one in a parity test).

    ``seed``: a number seeds one generator per device the parameters live on (on the CPU the same numbers whatever
    the module's size); a CPU ``torch.Generator`` goes on drawing from where it is (one stream over several calls).
    The noise is drawn in float32 and cast to each parameter's dtype."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if isinstance(seed, torch.Generator):
                generator = seed
            elif p.device not in generators:
                generator = generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            else:
                generator = generators[p.device]
            noise = torch.randn(p.shape, generator=generator, device=generator.device)
            if p.ndim >= 2:
                p.copy_(noise / p.shape[-1] ** 0.5)
            else:
                is_norm_weight = "norm" in name.lower() and name.endswith("weight")
                p.copy_(0.1 * noise + (1.0 if is_norm_weight else 0.0))
    return module


def random_esmfold(seed: int = 0) -> ESMFold:
    """The tiny randomized ESMFold (`RANDOM_ESMFOLD`, `RANDOM_LM`) in eval mode; the same ``seed``, the same weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the modules' own init draws from the global generator: leave it as it was
        lm = randomize_(ESM2(RANDOM_LM), generator)
        model = ESMFold(RANDOM_ESMFOLD, lm)
        randomize_(nn.ModuleList([child for name, child in model.named_children() if name != "esm"]), generator)
        randomize_(nn.ParameterList([model.esm_s_combine]), generator)
    return model.eval()


def write_random_esmfold(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `random_esmfold` (``seed``) into ``folder`` as ``esmfold_3B_v1.pt`` + ``esm2_t36_3B_UR50D.pt`` (and its
    contact regression); returns (ESMFold path, LM path). ``load_model`` of the first finds the LM beside it."""
    model = random_esmfold(seed)
    trunk = {key: value for key, value in model.state_dict().items() if not key.startswith("esm.")}
    return save_fair_esmfold(folder, asdict(model.cfg), trunk, asdict(model.esm.config), model.esm.state_dict())
