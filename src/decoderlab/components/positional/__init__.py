"""Positional encodings: the ``model/positional`` slot.

Contract (one object per model; every hook is the identity by default, so an encoding overrides only what it uses):

- ``embed(x, pos) -> x``: absolute encodings add to (or scale) the token embeddings.
  ``x``: (B, T, d_model); ``pos``: (T,) int64 absolute positions.
- ``rotate(q, k, pos) -> (q, k)``: rotary-style encodings act on queries and keys inside attention.
  ``q``: (B, n_heads, T, head_dim); ``k``: (B, n_kv_heads, T, head_dim); ``pos``: (T,).
  Keys are rotated before they enter a KV cache, so one ``pos`` serves both.
- ``bias(q_pos, k_pos) -> (1, n_heads, Tq, Tk) | None``: additive attention-score bias (T5 buckets, ALiBi).
  The model computes it once per forward and shares it across layers; attention folds the causal mask in.

``has_embed``/``has_rotate``/``has_bias`` tell the model which hooks to call (no dead work in the hot path).
``max_positions`` is the largest number of positions the encoding can represent (``None``: unbounded).
Builders are called as ``builder(cfg, dims=ModelDims)``.
"""

from __future__ import annotations

import torch
from torch import nn

from decoderlab.registry import Registry


class Positional(nn.Module):
    """Base class: the identity for all three hooks."""

    has_embed = False
    has_rotate = False
    has_bias = False
    max_positions: int | None = None

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        return None


POSITIONAL: Registry[Positional] = Registry("model/positional", Positional)

# Core encodings register themselves on import.
from decoderlab.components.positional import alibi, learned, nope, rope, sinusoidal, t5, xpos  # noqa: E402,F401

__all__ = ["POSITIONAL", "Positional"]
