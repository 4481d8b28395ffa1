"""Positional encodings: the ``model/positional`` slot.

Contract (one object per model; every hook is the identity by default, so an encoding overrides only what it uses).
Positions travel as Python ints, never as tensors, so a forward has no device-to-host sync and compiles to one graph
(``torch.compile(fullgraph=True)``): queries of a forward are at absolute positions ``start .. start + T - 1``, keys
(a KV cache's included) at ``0 .. start + T - 1``.

- ``embed(x, start) -> x``: absolute encodings add to (or scale) the token embeddings. ``x``: (B, T, d_model).
- ``rotate(q, k, start) -> (q, k)``: rotary-style encodings act on the new queries and keys inside attention.
  ``q``: (B, n_heads, T, head_dim); ``k``: (B, n_kv_heads, T, head_dim). Keys are rotated before they enter a
  KV cache, so one ``start`` serves both.
- ``bias(t_q, t_k) -> (1, n_heads, t_q, t_k)``: additive attention-score bias (T5 buckets, ALiBi) for the last
  ``t_q`` of ``t_k`` positions. The model computes it once per forward and shares it across layers; the causal
  ``-inf`` is folded in by the model.
- ``score_mod(t_q, t_k) -> fn``: optional, the same bias as a FlexAttention ``score_mod``
  ``fn(score, b, h, q_idx, kv_idx) -> score`` (indices within the t_q queries and t_k keys). Encodings that define
  it run through ``torch.nn.attention.flex_attention`` on CUDA (flash-speed, no (T, T) mask in memory); those with
  only ``bias`` use SDPA with a float mask.

Which hooks an encoding uses is derived from which methods its class overrides (``embeds``, ``rotates``,
``biases``, ``has_score_mod``): nothing to declare, so a hook cannot be written and then silently skipped.
An encoding that deliberately adds no positional signal sets ``position_free = True`` (the conformance battery
otherwise requires every encoding to change the model's output compared with ``none``).

``max_positions`` is the largest number of positions the encoding can represent (``None``: unbounded); the model
raises :class:`~decoderlab.errors.PositionRangeError` from Python ints before a forward would run past it.
``reserve(n)`` makes room for positions ``0 .. n - 1`` (grows fixed tables); the model calls it outside a compiled
graph (generation), and hooks grow lazily in eager mode. Builders are called as ``builder(cfg, dims=ModelDims)``;
config-time rules live in the config's ``check(model_cfg)`` (the model runs it before building).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from decoderlab.registry import Registry

ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_HOOKS = {"embeds": "embed", "rotates": "rotate", "biases": "bias", "has_score_mod": "score_mod"}
_OLD_FLAGS = ("has_embed", "has_rotate", "has_bias")


class Positional(nn.Module):
    """Base class: the identity for all hooks. Subclasses override the hooks they use; nothing else to declare."""

    embeds = False  # derived: the class overrides embed
    rotates = False  # derived: the class overrides rotate
    biases = False  # derived: the class overrides bias
    has_score_mod = False  # derived: the class overrides score_mod
    position_free = False  # declared: this encoding adds no positional signal on purpose (``none``)
    max_positions: int | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        stale = [f for f in (*_OLD_FLAGS, *_HOOKS) if f in vars(cls)]
        if stale:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} sets {', '.join(stale)}: which hooks an encoding uses is "
                f"derived from the methods it overrides (embed, rotate, bias, score_mod); remove the flag"
            )
        for flag, hook in _HOOKS.items():
            setattr(cls, flag, getattr(cls, hook) is not getattr(Positional, hook))
        if cls.has_score_mod and not cls.biases:
            raise TypeError(f"{cls.__qualname__} defines score_mod without bias: bias is the reference (SDPA, CPU)")

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, t_q: int, t_k: int) -> torch.Tensor | None:
        return None

    def score_mod(self, t_q: int, t_k: int) -> ScoreMod | None:
        return None

    def reserve(self, n_positions: int) -> None:
        """Make room for positions [0, n_positions) (fixed tables grow here); a no-op by default."""


POSITIONAL: Registry[Positional] = Registry("model/positional", Positional)

# Core encodings register themselves on import.
from decoderlab.components.positional import alibi, learned, nope, rope, sinusoidal, t5, xpos  # noqa: E402,F401

__all__ = ["POSITIONAL", "Positional", "ScoreMod"]
