"""Learned absolute position embeddings (GPT-1/GPT-2, https://openai.com/research/language-unsupervised)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.errors import PositionRangeError
from decoderlab.registry import ComponentConfig


@dataclass
class LearnedConfig(ComponentConfig):
    RANGES = {"max_positions": "[1, inf)"}  # allowed values, checked at composition (decoderlab.ranges)
    # Table size; None means model.block_size.
    max_positions: int | None = None

    def check(self, model_cfg: Any) -> list[str]:
        if self.max_positions is not None and self.max_positions < 1:
            return [f"model.positional.max_positions must be positive, got {self.max_positions}"]
        if self.max_positions is not None and self.max_positions < int(model_cfg.block_size):
            return [
                f"model.positional.max_positions={self.max_positions} is smaller than model.block_size="
                f"{model_cfg.block_size}: training windows would run past the learned table"
            ]
        return []


@POSITIONAL.register("learned", LearnedConfig)
class Learned(Positional):
    """A learned table of one vector per absolute position, added to the token embeddings."""

    def __init__(self, cfg: LearnedConfig, dims: ModelDims):
        super().__init__()
        self.max_positions = cfg.max_positions or dims.block_size
        self.wpe = nn.Embedding(self.max_positions, dims.d_model)

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        last = start + x.shape[1] - 1  # Python ints: checked before (or while tracing) the graph, never synced
        if last >= self.max_positions:
            raise PositionRangeError(
                f"learned positions have a table of {self.max_positions} positions, but position {last} was "
                f"requested: a learned encoding cannot represent positions it never trained. Crop the context to "
                f"{self.max_positions} tokens or use an encoding that extrapolates (rope, alibi, t5, sinusoidal)."
            )
        return x + self.wpe.weight[start:last + 1]  # (B, T, d) + (T, d): a slice, no gather
