"""Causal self-attention: the ``model/attention`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` whose ``forward(x, ctx: AttnContext) -> y`` maps
(B, T, d_model) to (B, T, d_model), attends only to positions <= its own, calls ``ctx.positional.rotate`` on
queries/keys and uses ``ctx.mask`` (an additive float mask with the causal -inf folded in) when one is given.

Options of ``mha``: ``n_kv_heads`` (GQA/MQA), ``qk_norm``, and ``impl`` = ``sdpa`` (fast) or ``math`` (the test
oracle: softmax written out). Config-time rules live in :meth:`MHAConfig.check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.norms import rms_norm
from decoderlab.registry import ComponentConfig, Registry


@dataclass
class AttnContext:
    """What every attention layer of one forward pass shares."""

    positional: Any  # the model's Positional object
    pos: torch.Tensor  # (T,) absolute positions of the queries
    mask: torch.Tensor | None = None  # (1, H, Tq, Tk) additive float mask incl. causal -inf; None = plain causal
    cache: Any = None  # per-layer KV cache entry (generation), or None


ATTENTION: Registry[nn.Module] = Registry("model/attention", nn.Module)
IMPLS = ("sdpa", "math")


@dataclass
class MHAConfig(ComponentConfig):
    # Key/value heads for grouped-query attention; None = n_heads (multi-head), 1 = multi-query.
    n_kv_heads: int | None = None
    # "sdpa": F.scaled_dot_product_attention (fast); "math": explicit softmax(QK^T/sqrt(D) + mask) V (test oracle).
    impl: str = "sdpa"
    # QK-norm: RMS-normalize each head's queries and keys (learned per-dimension scale) before RoPE.
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6

    def check(self, model_cfg: Any) -> list[str]:
        """Cross-key rules, reported at config time with both keys named."""
        problems = []
        n_heads = int(model_cfg.n_heads)
        if self.n_kv_heads is not None and self.n_kv_heads <= 0:
            problems.append(f"model.attention.n_kv_heads must be positive (or null for n_heads), got {self.n_kv_heads}")
        elif self.n_kv_heads is not None and n_heads % self.n_kv_heads:
            problems.append(
                f"model.n_heads={n_heads} is not divisible by model.attention.n_kv_heads={self.n_kv_heads}: "
                f"each key/value head must serve a whole group of query heads"
            )
        if self.impl not in IMPLS:
            problems.append(f"model.attention.impl must be one of {', '.join(IMPLS)}, got '{self.impl}'")
        if self.qk_norm and self.qk_norm_eps <= 0:
            problems.append(f"model.attention.qk_norm_eps must be positive, got {self.qk_norm_eps}")
        return problems


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> torch.Tensor:
    """(Tq, Tk) additive mask: 0 where key <= query (queries are the last Tq of Tk positions), -inf elsewhere."""
    q = torch.arange(tk - tq, tk, device=device)[:, None]
    k = torch.arange(tk, device=device)[None, :]
    return torch.zeros(tq, tk, device=device).masked_fill(k > q, float("-inf"))


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float = 0.0
) -> torch.Tensor:
    """Reference attention: softmax(q k^T / sqrt(D) + mask) v, with the causal mask when ``mask`` is None.

    Queries are the last Tq of the Tk key positions (a KV cache holds the first Tk - Tq).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    scores = scores + (mask if mask is not None else causal_mask(q.shape[-2], k.shape[-2], q.device)).to(q.dtype)
    att = F.dropout(scores.softmax(dim=-1), p=dropout_p) if dropout_p > 0 else scores.softmax(dim=-1)
    return att @ v  # (B, H, Tq, D)


@ATTENTION.register("mha", MHAConfig)
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762) on SDPA.

    Options: grouped-query heads (GQA, Ainslie et al. 2023, https://arxiv.org/abs/2305.13245; MQA at
    ``n_kv_heads=1``): query head j reads key/value head ``j // (n_heads / n_kv_heads)``. QK-norm (Dehghani et al.
    2023, https://arxiv.org/abs/2302.05442): RMSNorm of each head's q and k over ``head_dim`` with a learned scale
    shared by the heads (as in Qwen3/Gemma 3), applied before RoPE; for given scales it bounds the logits
    q.k / sqrt(D), the cure for attention-logit growth in large or high-learning-rate runs.
    """

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
        if cfg.impl not in IMPLS:
            raise ValueError(f"model.attention.impl must be one of {', '.join(IMPLS)}, got '{cfg.impl}'")
        self.impl = cfg.impl
        self.dropout = dims.dropout
        kv_dim = self.n_kv_heads * self.head_dim
        self.qkv = nn.Linear(dims.d_model, dims.d_model + 2 * kv_dim, bias=dims.bias)
        self.qkv.qkv_split = (dims.d_model, kv_dim, kv_dim)  # rows of W_q, W_k, W_v (DeepNorm scales W_v only)
        self.proj = nn.Linear(dims.d_model, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True  # scaled init (GPT-2)
        self.qk_norm_eps = cfg.qk_norm_eps
        if cfg.qk_norm:
            self.q_norm = nn.Parameter(torch.ones(self.head_dim))
            self.k_norm = nn.Parameter(torch.ones(self.head_dim))
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.qkv.qkv_split, dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        if self.q_norm is not None:  # over head_dim, while each head's rows are still contiguous
            q, k = rms_norm(q, self.q_norm, self.qk_norm_eps), rms_norm(k, self.k_norm, self.qk_norm_eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, D), (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.positional.has_rotate:
            q, k = ctx.positional.rotate(q, k, ctx.pos)
        if ctx.cache is not None:
            k, v = ctx.cache.update(k, v)  # (B, Hkv, Tk, D) including the past
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
        y = self.attend(q, k, v, ctx.mask)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, d_model)
        return self.proj(y)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T / sqrt(D) + mask) v for (B, H, Tq, D) queries over (B, H, Tk, D) keys/values."""
        p = self.dropout if self.training else 0.0
        if mask is None and q.shape[-2] != k.shape[-2] and q.shape[-2] > 1:
            mask = causal_mask(q.shape[-2], k.shape[-2], q.device)  # cached prefix + several new queries
        if self.impl == "math":
            return math_attention(q, k, v, mask, dropout_p=p)
        is_causal = mask is None and q.shape[-2] > 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=p)
