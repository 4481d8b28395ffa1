"""Norm placement, i.e. the residual wiring of one block: the ``model/placement`` slot.

Contract: ``builder(cfg, dims, layer_idx, attn, ffn, norm) -> nn.Module`` where ``attn``/``ffn`` are built
sublayers and ``norm`` is a zero-argument factory of fresh norm layers. The block's ``forward(x, ctx)`` maps
(B, T, d_model) to the same shape. ``final_norm`` says whether the model needs a norm before the head
(pre-norm's residual stream is never normalized; post-norm's output already is).
"""

from __future__ import annotations

from collections.abc import Callable

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

        x ──┬─► norm ─► attn ─►(+)──┬─► norm ─► ffn ─►(+)──►
            └──────────────────────┘└─────────────────────┘
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
    """Post-norm (original Transformer, GPT-1): normalize after each residual sum.

        x ──┬─► attn ─►(+)─► norm ──┬─► ffn ─►(+)─► norm ──►
            └─────────────┘          └────────────┘
    """

    final_norm = False

    def __init__(self, cfg, dims, layer_idx, attn, ffn, norm):
        super().__init__(cfg, dims, layer_idx, attn, ffn, norm)
        self.norm1, self.norm2 = norm(), norm()

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, ctx)))
        return self.norm2(x + self.drop(self.ffn(x)))

