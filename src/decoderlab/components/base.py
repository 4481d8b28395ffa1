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
    n_kv_heads: int | None = None
    bias: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads
