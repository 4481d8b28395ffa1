"""Norm placement, i.e. the residual wiring of one block: the ``model/placement`` slot.

Contract: ``builder(cfg, dims, layer_idx, attn, ffn, norm) -> nn.Module`` where ``attn``/``ffn`` are built
sublayers and ``norm`` is a zero-argument factory of fresh norm layers. The block's ``forward(x, ctx)`` maps
(B, T, d_model) to the same shape. ``final_norm`` says whether the model needs a norm before the head
(pre-norm's residual stream is never normalized; post-norm's output already is). A block may define
``init_weights()``; the model calls it after its generic init (DeepNorm rescales its sublayers there).

Options: ``pre`` (GPT-2, Llama), ``post`` (GPT-1), ``sandwich`` (CogView), ``deepnorm`` (DeepNet), ``parallel``
(GPT-J, PaLM). Each class draws its wiring; ``(+)`` is a residual sum, dropout on sublayer outputs is not drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decoderlab.components.attention import AttnContext
from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry

PLACEMENT: Registry[nn.Module] = Registry("model/placement", nn.Module)


class Block(nn.Module):
    """Base block: owns the sublayers; subclasses own their norms and their wiring."""

    final_norm = True

    def __init__(self, cfg: ComponentConfig, dims: ModelDims, layer_idx: int, attn: nn.Module, ffn: nn.Module,
                 norm: Callable[[], nn.Module]):
        super().__init__()
        self.attn, self.ffn = attn, ffn
        self.drop = nn.Dropout(dims.dropout)


@PLACEMENT.register("pre")
class PreNorm(Block):
    """Pre-norm (GPT-2, Llama; Xiong et al. 2020, https://arxiv.org/abs/2002.04745).

        x ──┬─► norm1 ─► attn ─►(+)──┬─► norm2 ─► ffn ─►(+)──►
            └───────────────────────┘└──────────────────────┘
    """

    final_norm = True

    def __init__(self, cfg, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        self.norm1, self.norm2 = norm(), norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), ctx))
        return x + self.drop(self.ffn(self.norm2(x)))


@PLACEMENT.register("post")
class PostNorm(Block):
    """Post-norm (original Transformer, https://arxiv.org/abs/1706.03762; GPT-1): normalize each residual sum.

        x ──┬─► attn ─►(+)─► norm1 ──┬─► ffn ─►(+)─► norm2 ──►
            └─────────────┘           └────────────┘
    """

    final_norm = False

    def __init__(self, cfg, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        self.norm1, self.norm2 = norm(), norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, ctx)))
        return self.norm2(x + self.drop(self.ffn(x)))


@PLACEMENT.register("sandwich")
class SandwichNorm(Block):
    """Sandwich-LN (CogView, Ding et al. 2021, https://arxiv.org/abs/2105.13290 §2.4): norm in and out.

        x ──┬─► norm1 ─► attn ─► norm1_out ─►(+)──┬─► norm2 ─► ffn ─► norm2_out ─►(+)──►
            └────────────────────────────────────┘└───────────────────────────────────┘

    The output norms bound what each sublayer adds to the residual stream (CogView's fix for fp16 blow-ups).
    """

    final_norm = True

    def __init__(self, cfg, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        self.norm1, self.norm1_out, self.norm2, self.norm2_out = norm(), norm(), norm(), norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = x + self.drop(self.norm1_out(self.attn(self.norm1(x), ctx)))
        return x + self.drop(self.norm2_out(self.ffn(self.norm2(x))))


@PLACEMENT.register("parallel")
class ParallelBlock(Block):
    """Parallel block (GPT-J, Wang & Komatsuzaki 2021; PaLM, https://arxiv.org/abs/2204.02311 §2): one shared norm.

        x ──┬─────────────────────────►(+)──►      y = x + attn(norm(x)) + ffn(norm(x))
            │              ┌─► attn ──►│
            └─► norm ──────┤           │
                           └─► ffn ───►┘
    """

    final_norm = True

    def __init__(self, cfg, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        self.norm = norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        h = self.norm(x)
        return x + self.drop(self.attn(h, ctx)) + self.drop(self.ffn(h))


@dataclass
class DeepNormConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "alpha": "(0, inf)",
        "beta": "(0, inf)",
    }
    # None: the paper's decoder-only values for N = model.n_layers, alpha = (2N)^(1/4), beta = (8N)^(-1/4).
    alpha: float | None = None
    beta: float | None = None

    def check(self, model_cfg: Any) -> list[str]:
        problems = [f"model.placement.{k} must be positive, got {v}"
                    for k, v in (("alpha", self.alpha), ("beta", self.beta)) if v is not None and v <= 0]
        norm = model_cfg.get("norm") if hasattr(model_cfg, "get") else getattr(model_cfg, "norm", None)
        norm_name = norm.get("name") if hasattr(norm, "get") else getattr(norm, "name", None)
        if norm_name == "none":
            problems.append("model.placement=deepnorm scales the residual by alpha > 1 every layer and needs a "
                            "norm to bound it, but model.norm=none")
        return problems


def deepnorm_constants(n_layers: int) -> tuple[float, float]:
    """(alpha, beta) of DeepNet's decoder-only formula for N layers: ((2N)^(1/4), (8N)^(-1/4))."""
    return (2 * n_layers) ** 0.25, (8 * n_layers) ** -0.25


def _xavier_normal_(w: torch.Tensor, gain: float) -> None:
    """Xavier-normal init of one (fan_out, fan_in) weight (or a row block of a fused one), in place."""
    fan_out, fan_in = w.shape
    with torch.no_grad():
        w.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


@PLACEMENT.register("deepnorm", DeepNormConfig)
class DeepNorm(Block):
    """DeepNorm (DeepNet, Wang et al. 2022, https://arxiv.org/abs/2203.00555): post-norm with an up-weighted residual.

        x ──┬─► attn ─►(+)─► norm1 ──┬─► ffn ─►(+)─► norm2 ──►
            └──► ×alpha ──┘           └► ×alpha ─┘

    Decoder-only constants for N layers: alpha = (2N)^(1/4), beta = (8N)^(-1/4). :meth:`init_weights` follows the
    paper's ``deepnorm_init``: Xavier-normal with gain beta for every ``nn.Linear`` of the FFN, the value rows of
    the attention's fused ``qkv`` (marked by ``qkv_split``), a separate value projection (marked ``is_value_proj``)
    and the attention's output projection (marked ``is_residual_proj``); gain 1 for the query and key rows and any
    other attention Linear. Biases stay zero; norms and embeddings keep the model's init.
    """

    final_norm = False

    def __init__(self, cfg: DeepNormConfig, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        alpha, beta = deepnorm_constants(dims.n_layers)
        self.alpha = cfg.alpha if cfg.alpha is not None else alpha
        self.beta = cfg.beta if cfg.beta is not None else beta
        self.norm1, self.norm2 = norm(), norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = self.norm1(self.alpha * x + self.drop(self.attn(x, ctx)))
        return self.norm2(self.alpha * x + self.drop(self.ffn(x)))

    def init_weights(self) -> None:
        for m in self.ffn.modules():
            if isinstance(m, nn.Linear):
                _xavier_normal_(m.weight, self.beta)
        for m in self.attn.modules():
            if not isinstance(m, nn.Linear):
                continue
            split = getattr(m, "qkv_split", None)
            if split is not None:  # fused [W_q; W_k; W_v]: each block initialized as its own projection
                w_q, w_k, w_v = m.weight.split(tuple(split), dim=0)
                _xavier_normal_(w_q, 1.0)
                _xavier_normal_(w_k, 1.0)
                _xavier_normal_(w_v, self.beta)
            else:
                scaled = getattr(m, "is_residual_proj", False) or getattr(m, "is_value_proj", False)
                _xavier_normal_(m.weight, self.beta if scaled else 1.0)
