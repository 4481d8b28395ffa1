"""Normalization layers: the ``model/norm`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` mapping (..., d_model) to the same shape and dtype,
normalizing over the last dimension. Placements call a zero-argument factory once per norm they own.

Options: ``layernorm`` (``bias`` on/off), ``rmsnorm``, ``scalenorm`` and ``none`` (the identity, for ablations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry

NORM: Registry[nn.Module] = Registry("model/norm", nn.Module)


def _eps_check(eps: float) -> list[str]:
    return [] if eps > 0 else [f"model.norm.eps must be positive, got {eps}"]


@dataclass
class LayerNormConfig(ComponentConfig):
    RANGES = {"eps": "(0, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    eps: float = 1e-5
    bias: bool = True  # false: scale only (as in PaLM, OLMo)

    def check(self, model_cfg: Any) -> list[str]:
        return _eps_check(self.eps)


@dataclass
class RMSNormConfig(ComponentConfig):
    RANGES = {"eps": "(0, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    eps: float = 1e-6

    def check(self, model_cfg: Any) -> list[str]:
        return _eps_check(self.eps)


@dataclass
class ScaleNormConfig(ComponentConfig):
    RANGES = {"eps": "(0, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    eps: float = 1e-5

    def check(self, model_cfg: Any) -> list[str]:
        return _eps_check(self.eps)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics in at least float32 (bf16/fp16 upcast), but never downcast float64 (parity tests)."""
    return torch.promote_types(x.dtype, torch.float32)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension, computed in >= float32, returned in x.dtype."""
    xf = x.to(_compute_dtype(x))
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if weight is None else y * weight


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
        return rms_norm(x, self.weight, self.eps)


@NORM.register("scalenorm", ScaleNormConfig)
class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019, https://arxiv.org/abs/1910.05895): g * x / max(||x||, eps), scalar g.

    One learned scalar per norm, initialized to sqrt(d_model) so the output starts with the RMS of a unit vector
    per dimension (as LayerNorm's output has).
    """

    def __init__(self, cfg: ScaleNormConfig, dims: ModelDims):
        super().__init__()
        self.eps = cfg.eps
        self.g = nn.Parameter(torch.tensor(float(dims.d_model) ** 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_compute_dtype(x))
        norm = xf.norm(dim=-1, keepdim=True).clamp(min=self.eps)  # (..., 1)
        return (xf / norm).to(x.dtype) * self.g


@NORM.register("none", ComponentConfig)
def no_norm(cfg: ComponentConfig, dims: ModelDims) -> nn.Module:
    """No normalization (the identity): an ablation baseline; unstable for deep models."""
    return nn.Identity()
