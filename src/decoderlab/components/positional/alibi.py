"""Attention with Linear Biases (ALiBi; Press et al. 2022, https://arxiv.org/abs/2108.12409).

Each head h adds ``-m_h * (i - j)`` to the score of query i and key j <= i: a fixed linear penalty on distance, with
a geometric sequence of per-head slopes m_h. No position enters the embeddings or the queries/keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional, ScoreMod
from decoderlab.registry import ComponentConfig


@dataclass
class AlibiConfig(ComponentConfig):
    pass


def alibi_slopes(n_heads: int) -> list[float]:
    """The paper's slopes (reference code, also BLOOM's ``build_alibi_tensor``).

    For a power of two n: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8). Otherwise, with p the largest power
    of two below n: the p slopes for p heads, then every other slope of the 2p-head sequence (the odd powers of
    2^(-4/p)), the first n - p of them.
    """
    if n_heads < 1:
        raise ValueError(f"alibi needs at least one head, got {n_heads}")

    def power_of_2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    if p == n_heads:
        return power_of_2(n_heads)
    return power_of_2(p) + alibi_slopes(2 * p)[0::2][: n_heads - p]


@POSITIONAL.register("alibi", AlibiConfig)
class Alibi(Positional):
    """Fixed per-head linear distance penalty on attention scores, slopes 2^(-8h/H) (extrapolates to any length)."""

    def __init__(self, cfg: AlibiConfig, dims: ModelDims):
        super().__init__()
        slopes = torch.tensor(alibi_slopes(dims.n_heads), dtype=torch.float32)
        self.register_buffer("slopes", slopes.view(-1, 1, 1), persistent=False)  # (H, 1, 1)

    def bias(self, t_q: int, t_k: int) -> torch.Tensor:
        # Queries are the last t_q of t_k positions. Future keys (j > i) get 0 here; the causal mask sets -inf.
        q_pos = torch.arange(t_k - t_q, t_k, device=self.slopes.device)
        k_pos = torch.arange(t_k, device=self.slopes.device)
        dist = (q_pos[:, None] - k_pos[None, :]).clamp(min=0)  # (Tq, Tk)
        return (-self.slopes * dist.to(self.slopes.dtype)).unsqueeze(0)  # (1, H, Tq, Tk)

    def score_mod(self, t_q: int, t_k: int) -> ScoreMod:
        slopes, offset = self.slopes.view(-1), t_k - t_q  # (H,); query q_idx sits at position q_idx + offset

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx + offset - kv_idx).clamp(min=0).to(slopes.dtype)

        return alibi
