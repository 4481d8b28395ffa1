"""Causal self-attention: the ``model/attention`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` whose ``forward(x, ctx: AttnContext) -> y`` maps
(B, T, d_model) to (B, T, d_model), attends only to positions <= its own, calls ``ctx.positional.rotate`` on
queries/keys and uses ``ctx.mask`` (an additive float mask with the causal -inf folded in) when one is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry


@dataclass
class AttnContext:
    """What every attention layer of one forward pass shares."""

    positional: Any  # the model's Positional object
    pos: torch.Tensor  # (T,) absolute positions of the queries
    mask: torch.Tensor | None = None  # (1, H, Tq, Tk) additive float mask incl. causal -inf; None = plain causal
    cache: Any = None  # per-layer KV cache entry (generation), or None


ATTENTION: Registry[nn.Module] = Registry("model/attention", nn.Module)


@dataclass
class MHAConfig(ComponentConfig):
    # Key/value heads for grouped-query attention; None = n_heads (multi-head), 1 = multi-query.
    n_kv_heads: int | None = None
    # "sdpa": F.scaled_dot_product_attention (fast); "math": explicit softmax(QK^T/sqrt(D) + mask) V (test oracle).
    impl: str = "sdpa"


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> torch.Tensor:
    """(Tq, Tk) additive mask: 0 where key <= query (queries are the last Tq of Tk positions), -inf elsewhere."""
    q = torch.arange(tk - tq, tk, device=device)[:, None]
    k = torch.arange(tk, device=device)[None, :]
    return torch.zeros(tq, tk, device=device).masked_fill(k > q, float("-inf"))


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Reference attention: softmax(q k^T / sqrt(D) + mask) v, with the causal mask when ``mask`` is None."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    scores = scores + (mask if mask is not None else causal_mask(q.shape[-2], k.shape[-2], q.device))
    return scores.softmax(dim=-1) @ v  # (B, H, Tq, D)


@ATTENTION.register("mha", MHAConfig)
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional grouped-query heads, on SDPA."""

    def __init__(self, cfg: MHAConfig, dims: ModelDims):
        super().__init__()
        self.n_heads, self.head_dim = dims.n_heads, dims.head_dim
        self.n_kv_heads = cfg.n_kv_heads or dims.n_kv_heads or dims.n_heads
        if dims.d_model % dims.n_heads:
            raise ValueError(f"model.d_model={dims.d_model} is not divisible by model.n_heads={dims.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_heads={self.n_heads} is not divisible by model.attention.n_kv_heads={self.n_kv_heads}"
            )
        if cfg.impl not in ("sdpa", "math"):
            raise ValueError(f"model.attention.impl must be 'sdpa' or 'math', got '{cfg.impl}'")
        self.impl = cfg.impl
        self.dropout = dims.dropout
        kv_dim = self.n_kv_heads * self.head_dim
        self.qkv = nn.Linear(dims.d_model, dims.d_model + 2 * kv_dim, bias=dims.bias)
        self.proj = nn.Linear(dims.d_model, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True  # scaled init (GPT-2)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        B, T, C = x.shape
        kv_dim = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split((C, kv_dim, kv_dim), dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.positional.has_rotate:
            q, k = ctx.positional.rotate(q, k, ctx.pos)
        if ctx.cache is not None:
            k, v = ctx.cache.update(k, v)  # (B, Hkv, Tk, D) including the past
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
        mask = ctx.mask
        if mask is None and q.shape[-2] != k.shape[-2] and q.shape[-2] > 1:
            mask = causal_mask(q.shape[-2], k.shape[-2], q.device)  # cached prefix + several new queries
        if self.impl == "math":
            y = math_attention(q, k, v, mask)
        else:
            is_causal = mask is None and q.shape[-2] > 1
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
            )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, d_model)
        return self.proj(y)
