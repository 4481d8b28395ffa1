"""Rotary position embedding, ``rotate_half`` form (Su et al. 2021, https://arxiv.org/abs/2104.09864)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.registry import ComponentConfig


@dataclass
class RopeConfig(ComponentConfig):
    base: float = 10000.0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension: dimension i pairs with i + D/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_angles(pos: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """Angles pos * base^(-2i/dim) for i < dim/2, duplicated over both halves; shape (T, dim), float32."""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)  # (dim/2,)
    freqs = pos.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, dim/2)
    return torch.cat((freqs, freqs), dim=-1).float()  # (T, dim)


@POSITIONAL.register("rope", RopeConfig)
class Rope(Positional):
    """Rotates each (i, i + D/2) pair of query/key dimensions by pos * base^(-2i/D): scores depend on m - n."""

    has_rotate = True

    def __init__(self, cfg: RopeConfig, dims: ModelDims):
        super().__init__()
        self.dim = dims.head_dim
        if self.dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {self.dim}")
        self.base = cfg.base
        self._cache_len = 0
        self._extend(dims.block_size, torch.device("cpu"))

    def _extend(self, n_pos: int, device: torch.device) -> None:
        angles = rope_angles(torch.arange(n_pos, device=device), self.dim, self.base)  # (T, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self._cache_len = n_pos

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(pos[-1]) + 1
        if n > self._cache_len:
            self._extend(max(n, 2 * self._cache_len), q.device)
        if pos.numel() == n and int(pos[0]) == 0:
            cos, sin = self.cos[:n], self.sin[:n]  # (T, D): the common case, no gather
        else:
            cos, sin = self.cos[pos], self.sin[pos]
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
