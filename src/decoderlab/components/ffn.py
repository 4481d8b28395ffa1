"""Position-wise feed-forward networks: the ``model/ffn`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` mapping (B, T, d_model) to (B, T, d_model), acting on
each position independently. The output projection carries ``is_residual_proj = True`` for the scaled init.

Hidden size rule (:func:`hidden_size`): an explicit ``hidden``; else ``multiplier * d_model``; gated FFNs with
``match_params=true`` get ``2/3 * multiplier * d_model`` (rounded to ``multiple_of``) so that their three matrices
hold as many parameters as the two of the ungated 4x MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry

FFN: Registry[nn.Module] = Registry("model/ffn", nn.Module)

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_exact": F.gelu,
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # squared ReLU (So et al. 2021, Primer)
    "silu": F.silu,
}


@dataclass
class MLPConfig(ComponentConfig):
    activation: str = "gelu"
    hidden: int | None = None
    multiplier: float = 4.0
    multiple_of: int = 1


@dataclass
class GLUConfig(ComponentConfig):
    hidden: int | None = None
    multiplier: float = 4.0
    match_params: bool = True
    multiple_of: int = 8


def hidden_size(cfg: MLPConfig | GLUConfig, d_model: int, gated: bool) -> int:
    """The FFN's hidden width under the rule in the module docstring."""
    if cfg.hidden is not None:
        return cfg.hidden
    width = cfg.multiplier * d_model
    if gated and getattr(cfg, "match_params", False):
        width = width * 2 / 3
    m = max(1, cfg.multiple_of)
    return max(m, int(round(width / m)) * m)


def _activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}'. Valid: {', '.join(sorted(ACTIVATIONS))}") from None


@FFN.register("mlp", MLPConfig)
class MLP(nn.Module):
    """Two-layer MLP with an activation (GPT: GELU; original Transformer: ReLU)."""

    def __init__(self, cfg: MLPConfig, dims: ModelDims):
        super().__init__()
        self.act = _activation(cfg.activation)
        h = hidden_size(cfg, dims.d_model, gated=False)
        self.fc = nn.Linear(dims.d_model, h, bias=dims.bias)
        self.proj = nn.Linear(h, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class GLU(nn.Module):
    """Gated linear unit FFN: proj(act(x W_gate) * (x W_up)) (Shazeer 2020, https://arxiv.org/abs/2002.05202)."""

    activation = "silu"

    def __init__(self, cfg: GLUConfig, dims: ModelDims):
        super().__init__()
        self.act = _activation(self.activation)
        h = hidden_size(cfg, dims.d_model, gated=True)
        self.gate_up = nn.Linear(dims.d_model, 2 * h, bias=dims.bias)  # one matmul for both branches
        self.proj = nn.Linear(h, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, h) each
        return self.proj(self.act(gate) * up)


@FFN.register("swiglu", GLUConfig)
class SwiGLU(GLU):
    """SwiGLU FFN (PaLM, Llama): SiLU-gated linear unit."""

    activation = "silu"
