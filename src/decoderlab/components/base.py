"""Shared vocabulary of the model's components: the dimensions every builder receives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    """Dimensions of one model, computed once in code and handed to every builder."""

    d_model: int
    n_heads: int
    n_layers: int
    block_size: int
    vocab_size: int
    bias: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
