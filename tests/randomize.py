"""Randomize every parameter before a parity test: ESMFold zero-initialises many output layers, and a zero layer
hides a miswired one."""

from __future__ import annotations

import torch


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """In place: matrices ~ N(0, 1/fan_in); norm weights 1 + 0.1·N(0, 1); other vectors 0.1·N(0, 1).

    The noise is drawn where each parameter lives, from one generator per device seeded with ``seed`` (on the CPU
    the same numbers whatever the module's size)."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.device not in generators:
                generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            noise = torch.randn(p.shape, generator=generators[p.device], device=p.device)
            if p.ndim >= 2:
                p.copy_(noise / p.shape[-1] ** 0.5)
            else:
                is_norm_weight = "norm" in name.lower() and name.endswith("weight")
                p.copy_(0.1 * noise + (1.0 if is_norm_weight else 0.0))
    return module
