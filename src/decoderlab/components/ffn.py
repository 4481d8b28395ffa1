"""Position-wise feed-forward networks: the ``model/ffn`` slot.

Contract: ``builder(cfg, dims=ModelDims) -> nn.Module`` mapping (B, T, d_model) to (B, T, d_model), acting on
each position independently. The output projection carries ``is_residual_proj = True`` for the scaled init.

Hidden size rule (:func:`hidden_size`), first match wins:

1. ``hidden``: an explicit width;
2. gated FFNs with ``match_params=true`` (their default): ``2/3 * multiplier * d_model`` rounded to the nearest
   multiple of ``multiple_of``, so that their three matrices hold as many parameters as the two of the ungated
   ``multiplier``x MLP (4x GELU by default; Shazeer 2020 §2);
3. ``multiplier * d_model`` rounded to ``multiple_of``.

``multiple_of`` defaults to 1 for gated FFNs: the match is then within 3/(16 * d_model) (under 1% for every
d_model >= 19). Rounding to a hardware-friendly multiple costs up to ``3 * multiple_of / (16 * d_model)`` of
relative mismatch: Llama's 256 gives 0.8% at d_model=4096 (see the ``swiglu_llama`` preset), up to 9% at 512.
With ``model.bias=true`` the gated FFN's extra biases add 1/(6 * d_model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.registry import ComponentConfig, Registry

FFN: Registry[nn.Module] = Registry("model/ffn", nn.Module)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": lambda x: F.gelu(x, approximate="tanh"),  # GPT-1/GPT-2's tanh approximation
    "gelu_exact": F.gelu,  # erf form (Hendrycks & Gimpel 2016)
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # squared ReLU (So et al. 2021, Primer, https://arxiv.org/abs/2109.08668)
    "silu": F.silu,
}


@dataclass
class MLPConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "hidden": "[1, inf)",
        "multiplier": "(0, inf)",
        "multiple_of": "[1, inf)",
    }
    activation: str = "gelu"  # one of ACTIVATIONS: gelu (tanh approx.), gelu_exact, relu, relu2, silu
    hidden: int | None = None  # explicit hidden width; None: multiplier * d_model
    multiplier: float = 4.0
    multiple_of: int = 1

    def check(self, model_cfg: Any) -> list[str]:
        problems = _size_problems(self)
        if self.activation not in ACTIVATIONS:
            problems.append(
                f"model.ffn.activation='{self.activation}' is unknown; valid: {', '.join(sorted(ACTIVATIONS))}"
            )
        return problems


@dataclass
class GLUConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "hidden": "[1, inf)",
        "multiplier": "(0, inf)",
        "multiple_of": "[1, inf)",
    }
    hidden: int | None = None  # explicit hidden width; wins over match_params and multiplier
    multiplier: float = 4.0
    match_params: bool = True  # 2/3 * multiplier * d_model: as many parameters as the ungated multiplier-x MLP
    multiple_of: int = 1

    def check(self, model_cfg: Any) -> list[str]:
        return _size_problems(self)


def _size_problems(cfg: MLPConfig | GLUConfig) -> list[str]:
    problems = []
    if cfg.hidden is not None and cfg.hidden <= 0:
        problems.append(f"model.ffn.hidden must be positive, got {cfg.hidden}")
    if cfg.multiplier <= 0:
        problems.append(f"model.ffn.multiplier must be positive, got {cfg.multiplier}")
    if cfg.multiple_of <= 0:
        problems.append(f"model.ffn.multiple_of must be positive, got {cfg.multiple_of}")
    return problems


def hidden_size(cfg: MLPConfig | GLUConfig, d_model: int, gated: bool) -> int:
    """The FFN's hidden width under the rule in the module docstring."""
    if cfg.hidden is not None:
        return cfg.hidden
    width = cfg.multiplier * d_model
    if gated and getattr(cfg, "match_params", False):
        width = width * 2 / 3
    m = max(1, cfg.multiple_of)
    return max(m, int(round(width / m)) * m)


@FFN.register("mlp", MLPConfig)
class MLP(nn.Module):
    """Two-layer MLP proj(act(fc(x))) (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762; GPT: GELU)."""

    def __init__(self, cfg: MLPConfig, dims: ModelDims):
        super().__init__()
        self.act = ACTIVATIONS[cfg.activation]  # the name is checked by MLPConfig.check
        h = hidden_size(cfg, dims.d_model, gated=False)
        self.fc = nn.Linear(dims.d_model, h, bias=dims.bias)
        self.proj = nn.Linear(h, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class GLU(nn.Module):
    """Gated linear unit FFN: proj(act(x W_gate) * (x W_up)) (Shazeer 2020, https://arxiv.org/abs/2002.05202).

    ``gate_up`` holds [W_gate; W_up] stacked on the output dimension: one matmul for both branches.
    """

    activation = "silu"

    def __init__(self, cfg: GLUConfig, dims: ModelDims):
        super().__init__()
        self.act = ACTIVATIONS[self.activation]
        self.hidden = h = hidden_size(cfg, dims.d_model, gated=True)
        self.gate_up = nn.Linear(dims.d_model, 2 * h, bias=dims.bias)
        self.proj = nn.Linear(h, dims.d_model, bias=dims.bias)
        self.proj.is_residual_proj = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, h) each
        return self.proj(self.act(gate) * up)


@FFN.register("swiglu", GLUConfig)
class SwiGLU(GLU):
    """SwiGLU FFN (Shazeer 2020, https://arxiv.org/abs/2002.05202; PaLM, Llama): SiLU-gated linear unit."""

    activation = "silu"


@FFN.register("geglu", GLUConfig)
class GeGLU(GLU):
    """GeGLU FFN (Shazeer 2020, https://arxiv.org/abs/2002.05202): GELU-gated linear unit (erf GELU)."""

    activation = "gelu_exact"
