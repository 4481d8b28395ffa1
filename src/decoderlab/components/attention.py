"""Causal self-attention: the ``model/attention`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` whose ``forward(x, ctx: AttnContext) -> y`` maps
(B, T, d_model) to (B, T, d_model), attends only to positions <= its own, calls ``ctx.positional.rotate`` on
queries/keys with Python-int ``ctx.start`` and gets the score bias from ``ctx.bias_mask`` (SDPA/math: an additive
float mask with the causal -inf folded in) or ``ctx.flex_args`` (FlexAttention: score_mod + causal block mask).

Options of ``mha``: ``n_kv_heads`` (GQA/MQA, SDPA's ``enable_gqa``: no copies of keys/values), ``qk_norm``, and
``impl`` = ``auto`` (default), ``sdpa``, ``flex`` (``torch.nn.attention.flex_attention`` with the encoding's
``score_mod``: T5/ALiBi biases at flash speed on CUDA) or ``math`` (the test oracle: softmax written out).
Config-time rules live in :meth:`MHAConfig.check` (the model runs them; the constructor does not repeat them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from decoderlab.components.base import ModelDims
from decoderlab.components.norms import rms_norm
from decoderlab.registry import ComponentConfig, Registry


@dataclass
class AttnContext:
    """What every attention layer of one forward pass shares; positions are Python ints (no host syncs).

    Queries are at absolute positions ``start .. start + T - 1``, keys at ``0 .. start + T - 1``. The model makes
    one context per layer with :meth:`for_layer` (its KV cache entry); the bias mask and the FlexAttention
    arguments are built on first use and shared by every layer of the forward through ``shared``, a dict.
    A context is never mutated once made: under ``torch.compile`` (torch 2.13), an attribute stored on an object
    made inside the graph is lost after a ``flex_attention`` call (dict updates and new objects are kept), so a
    mutated ``ctx.cache`` fed layer 0's keys to layer 1. ``tests/components/test_attention_flex.py`` pins it.
    """

    positional: Any  # the model's Positional object
    start: int = 0  # absolute position of the first query (the KV cache's length)
    mask: torch.Tensor | None = None  # (1, H, Tq, Tk) additive float mask incl. causal -inf; None: from positional
    cache: Any = None  # this layer's KV cache entry (generation), or None
    shared: dict[str, Any] = field(default_factory=dict, repr=False)  # per-forward memo: "mask", "flex"

    def for_layer(self, cache: Any) -> AttnContext:
        """This context for one layer: its own KV cache entry, the same positions and shared memo."""
        return dataclasses.replace(self, cache=cache)

    def bias_mask(self, t_q: int, t_k: int) -> torch.Tensor | None:
        """The additive mask for SDPA: positional bias + causal -inf, or None (plain causal, no bias)."""
        if self.mask is not None or not self.positional.biases:
            return self.mask
        if "mask" not in self.shared:
            bias = self.positional.bias(t_q, t_k)  # (1, H, Tq, Tk)
            # A 4-D [1, H, T, T] float mask keeps SDPA on its fast CPU kernel (3-D falls back to the slow path).
            self.shared["mask"] = bias + causal_mask(t_q, t_k, bias.device).to(bias.dtype)
        return self.shared["mask"]

    def flex_args(self, t_q: int, t_k: int, device: torch.device) -> tuple[Any, Any]:
        """(score_mod, causal block mask) for FlexAttention; queries are the last t_q of t_k positions."""
        if "flex" not in self.shared:
            self.shared["flex"] = (self.positional.score_mod(t_q, t_k), causal_block_mask(t_q, t_k, device))
        return self.shared["flex"]


ATTENTION: Registry[nn.Module] = Registry("model/attention", nn.Module)
IMPLS = ("auto", "sdpa", "flex", "math")
# FlexAttention's CUDA kernel (Inductor) refuses smaller heads: "embedding dimension of the query, key, and value must
# be at least 16" (torch/_inductor/kernel/flex/flex_attention.py). The CPU's eager reference has no such limit.
FLEX_MIN_HEAD_DIM = 16


@dataclass
class MHAConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "n_kv_heads": "[1, inf)",
        "qk_norm_eps": "(0, inf)",
    }
    # Key/value heads for grouped-query attention; None = n_heads (multi-head), 1 = multi-query.
    n_kv_heads: int | None = None
    # "auto": flex for encodings with a score_mod on CUDA (head_dim >= 16, no dropout), else sdpa. "sdpa":
    # F.scaled_dot_product_attention (a float mask for biases). "flex": torch.nn.attention.flex_attention with the
    # encoding's score_mod and a causal block mask (CUDA for training; CPU runs its forward only).
    # "math": explicit softmax(QK^T/sqrt(D) + mask) V (the test oracle).
    impl: str = "auto"
    # QK-norm: RMS-normalize each head's queries and keys (learned per-dimension scale) before RoPE.
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6

    def check(self, model_cfg: Any) -> list[str]:
        """Cross-key rules, reported at config time with both keys named."""
        problems = []
        n_heads, d_model = int(model_cfg.n_heads), int(model_cfg.d_model)
        if n_heads > 0 and d_model % n_heads:
            problems.append(f"model.d_model={d_model} is not divisible by model.n_heads={n_heads}")
        if self.n_kv_heads is not None and self.n_kv_heads <= 0:
            problems.append(f"model.attention.n_kv_heads must be positive (or null for n_heads), got {self.n_kv_heads}")
        elif self.n_kv_heads is not None and n_heads % self.n_kv_heads:
            problems.append(
                f"model.n_heads={n_heads} is not divisible by model.attention.n_kv_heads={self.n_kv_heads}: "
                f"each key/value head must serve a whole group of query heads"
            )
        if self.impl not in IMPLS:
            problems.append(f"model.attention.impl must be one of {', '.join(IMPLS)}, got '{self.impl}'")
        if self.impl == "flex" and float(getattr(model_cfg, "dropout", 0.0) or 0.0) > 0:
            problems.append("model.attention.impl=flex has no attention dropout: set model.dropout=0 or impl=auto")
        if self.qk_norm and self.qk_norm_eps <= 0:
            problems.append(f"model.attention.qk_norm_eps must be positive, got {self.qk_norm_eps}")
        return problems


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> torch.Tensor:
    """(Tq, Tk) additive mask: 0 where key <= query (queries are the last Tq of Tk positions), -inf elsewhere."""
    q = torch.arange(tk - tq, tk, device=device)[:, None]
    k = torch.arange(tk, device=device)[None, :]
    return torch.zeros(tq, tk, device=device).masked_fill(k > q, float("-inf"))


def causal_block_mask(t_q: int, t_k: int, device: torch.device) -> Any:
    """FlexAttention's causal BlockMask for the last t_q of t_k positions (fully masked blocks are skipped)."""
    offset = t_k - t_q

    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    return create_block_mask(causal, B=None, H=None, Q_LEN=t_q, KV_LEN=t_k, device=device)


_COMPILED_FLEX: list[Any] = []  # torch.compile(flex_attention), made once on first CUDA use


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, score_mod: Any, block_mask: Any, gqa: bool) -> torch.Tensor:
    """FlexAttention: compiled on CUDA (its fused kernel), inlined when the whole model is being compiled, and the
    eager reference elsewhere (CPU: forward only in torch 2.13)."""
    fn = flex_attention
    if q.device.type == "cuda" and not torch.compiler.is_compiling():
        if not _COMPILED_FLEX:
            _COMPILED_FLEX.append(torch.compile(flex_attention))
        fn = _COMPILED_FLEX[0]
    return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)  # (B, H, Tq, D)


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
        self.n_kv_heads = cfg.n_kv_heads or dims.n_heads
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
        if ctx.positional.rotates:
            q, k = ctx.positional.rotate(q, k, ctx.start)
        if ctx.cache is not None:
            k, v = ctx.cache.update(k, v)  # (B, Hkv, Tk, D) including the past
        y = self.attend(q, k, v, ctx)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, d_model)
        return self.proj(y)

    def resolved_impl(self, ctx: AttnContext, device: torch.device) -> str:
        """The implementation this call runs: ``auto`` is flex for a score_mod encoding on CUDA (heads of at least
        FLEX_MIN_HEAD_DIM dimensions, no attention dropout in training), else sdpa."""
        if self.impl != "auto":
            return self.impl
        flex_ok = (ctx.positional.has_score_mod and device.type == "cuda" and self.head_dim >= FLEX_MIN_HEAD_DIM
                   and not (self.training and self.dropout))
        return "flex" if flex_ok else "sdpa"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """softmax(q k^T / sqrt(D) + bias) v, causal, for (B, H, Tq, D) queries over (B, Hkv, Tk, D) keys/values."""
        p = self.dropout if self.training else 0.0
        t_q, t_k = q.shape[-2], k.shape[-2]
        impl, gqa = self.resolved_impl(ctx, q.device), self.n_kv_heads != self.n_heads
        if impl == "flex" and ctx.positional.has_score_mod:
            score_mod, block_mask = ctx.flex_args(t_q, t_k, q.device)
            return flex(q, k, v, score_mod, block_mask, gqa)
        mask = ctx.bias_mask(t_q, t_k)
        if mask is None and t_q != t_k and t_q > 1:
            mask = causal_mask(t_q, t_k, q.device)  # cached prefix + several new queries
        if impl == "math":
            if gqa:  # the oracle spells the grouping out: query head j reads key/value head j // (H / Hkv)
                rep = self.n_heads // self.n_kv_heads
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
            return math_attention(q, k, v, mask, dropout_p=p)
        if mask is None and t_q > 1:  # a Python branch (a guard under dynamic shapes), never a SymBool argument
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=gqa)
