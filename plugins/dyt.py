"""Example plugin: Dynamic Tanh, a normalization-free drop-in for LayerNorm.

Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization", https://arxiv.org/abs/2503.10622:
DyT(x) = gamma * tanh(alpha * x) + beta, with one learnable scalar alpha (init alpha0) and per-channel
gamma/beta. Dropped into ``plugins/`` it registers ``model/norm=dyt`` with no edit of decoderlab's core:

    decoderlab-train model/norm=dyt model.norm.alpha0=1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.norms import NORM
from decoderlab.registry import ComponentConfig


@dataclass
class DyTConfig(ComponentConfig):
    RANGES = {"alpha0": "(0, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    alpha0: float = 0.5  # the paper's default initial alpha for non-LLM widths


@NORM.register("dyt", DyTConfig)
class DyT(nn.Module):
    """Dynamic Tanh (arXiv:2503.10622): gamma * tanh(alpha * x) + beta, no statistics."""

    def __init__(self, cfg: DyTConfig, dims: ModelDims):
        super().__init__()
        self.alpha0 = cfg.alpha0
        self.alpha = nn.Parameter(torch.full((1,), cfg.alpha0))
        self.weight = nn.Parameter(torch.ones(dims.d_model))
        self.bias = nn.Parameter(torch.zeros(dims.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias
