"""xPos: RoPE with an exponential decay of scores in distance (Sun et al. 2022, https://arxiv.org/abs/2212.10554).

Pair i of the query at position n is scaled by zeta_i^(n/B) and of the key at m by zeta_i^(-m/B), with
zeta_i = (2i/R + gamma) / (1 + gamma) < 1, so a score carries zeta_i^((n-m)/B): still a function of n - m only,
decaying with distance fastest in the high-frequency pairs (which carry the least long-range information).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL
from decoderlab.components.positional.rope import Rotary, model_head_dim, rotated_dim_problems
from decoderlab.components.positional.rope_scaling import base_inv_freq
from decoderlab.registry import ComponentConfig


@dataclass
class XposConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "base": "(1, inf)",
        "scale_base": "(0, inf)",
        "gamma": "[0, inf)",
    }
    base: float = 10000.0
    impl: str = "complex"  # as for rope: "complex" or "rotate_half"
    scale_base: float = 512.0  # B: the decay is zeta^(distance / B) (torchscale's default)
    gamma: float = 0.4  # zeta_i = (2i/R + gamma) / (1 + gamma)

    def check(self, model_cfg: Any) -> list[str]:
        return xpos_problems(self, model_head_dim(model_cfg))


def xpos_problems(cfg: XposConfig, head_dim: int | None) -> list[str]:
    p = "model.positional"
    out = [] if cfg.base > 1 else [f"{p}.base={cfg.base} must be > 1"]
    if head_dim is not None:
        out += rotated_dim_problems(cfg.impl, head_dim, head_dim, "head_dim")
    if cfg.scale_base <= 0 or cfg.gamma <= 0:
        out.append(f"{p}.scale_base={cfg.scale_base} and {p}.gamma={cfg.gamma} must both be positive")
    return out


def xpos_zeta(rot: int, gamma: float) -> torch.Tensor:
    """zeta_i = (2i/R + gamma) / (1 + gamma) for pair i < R/2; shape (R/2,), float64, in (0, 1)."""
    return (torch.arange(0, rot, 2, dtype=torch.float64) / rot + gamma) / (1 + gamma)


@POSITIONAL.register("xpos", XposConfig)
class Xpos(Rotary):
    """RoPE whose scores decay as zeta_i^((n-m)/B) per pair: relative, and length-extrapolating."""

    def __init__(self, cfg: XposConfig, dims: ModelDims):
        self.zeta, self.scale_base = xpos_zeta(dims.head_dim, cfg.gamma), cfg.scale_base
        # Scores depend on n - m only, so any fixed centre works; the middle of the context keeps the scales of
        # q and k near 1 where the model trains. It must not move with the input length (KV cache keys keep theirs).
        self.center = dims.block_size // 2
        super().__init__(cfg.impl, dims.head_dim, base_inv_freq(dims.head_dim, cfg.base), dims.block_size)

    def magnitudes(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        power = (pos - self.center)[:, None] / self.scale_base  # (T, 1)
        return self.zeta[None, :] ** power, self.zeta[None, :] ** -power  # (T, R/2) each
