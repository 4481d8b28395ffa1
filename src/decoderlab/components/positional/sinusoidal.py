"""Sinusoidal absolute positions (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762 §3.5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.registry import ComponentConfig


@dataclass
class SinusoidalConfig(ComponentConfig):
    RANGES = {"base": "(1, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    base: float = 10000.0
    # Scale token embeddings by sqrt(d_model) before adding PE (§3.4): small embeddings are otherwise swamped.
    scale_embeddings: bool = True

    def check(self, model_cfg: Any) -> list[str]:
        if int(model_cfg.d_model) % 2:
            return [f"model.positional=sinusoidal needs an even model.d_model (sin/cos pairs), got {model_cfg.d_model}"]
        return []


def sinusoid_table(n_pos: int, d_model: int, base: float, offset: int = 0) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d)); shape (n_pos, d_model)."""
    pos = torch.arange(offset, offset + n_pos, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = pos * inv_freq  # (T, d/2)
    pe = torch.zeros(n_pos, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe.float()


@POSITIONAL.register("sinusoidal", SinusoidalConfig)
class Sinusoidal(Positional):
    """Fixed sinusoidal absolute positions added to (sqrt(d)-scaled) token embeddings."""

    def __init__(self, cfg: SinusoidalConfig, dims: ModelDims):
        super().__init__()
        self.base = cfg.base
        self.scale = math.sqrt(dims.d_model) if cfg.scale_embeddings else 1.0
        self.register_buffer("pe", sinusoid_table(dims.block_size, dims.d_model, cfg.base), persistent=False)

    def reserve(self, n_positions: int) -> None:
        """Grow the table to cover positions [0, n_positions), so lengths past block_size work."""
        if n_positions > self.pe.shape[0]:
            self.pe = sinusoid_table(n_positions, self.pe.shape[1], self.base).to(self.pe.device, self.pe.dtype)

    def table(self, n_pos: int) -> torch.Tensor:
        """PE rows for positions [0, n_pos)."""
        self.reserve(n_pos)
        return self.pe[:n_pos]

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        pe = self.table(start + x.shape[1])[start:]  # (T, d)
        return x * self.scale + pe.to(x.dtype)
