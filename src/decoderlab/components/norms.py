"""Normalization layers: the ``model/norm`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` mapping (..., d_model) to the same shape, normalizing
over the last dimension. Placements call a zero-argument factory once per norm they own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry

NORM: Registry[nn.Module] = Registry("model/norm", nn.Module)


@dataclass
class LayerNormConfig(ComponentConfig):
    eps: float = 1e-5
    bias: bool = True


@dataclass
class RMSNormConfig(ComponentConfig):
    eps: float = 1e-6


@NORM.register("layernorm", LayerNormConfig)
def layernorm(cfg: LayerNormConfig, dims: ModelDims) -> nn.Module:
    """LayerNorm (Ba et al. 2016, https://arxiv.org/abs/1607.06450): centre, scale to unit variance, affine."""
    return nn.LayerNorm(dims.d_model, eps=cfg.eps, bias=cfg.bias)


@NORM.register("rmsnorm", RMSNormConfig)
class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467): x / rms(x) * g, no centring."""

    def __init__(self, cfg: RMSNormConfig, dims: ModelDims):
        super().__init__()
        self.eps = cfg.eps
        self.weight = nn.Parameter(torch.ones(dims.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out rather than nn.RMSNorm: its CPU backward is ~3x slower than this in torch 2.13.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight
