"""T5 relative position bias (Raffel et al. 2020, https://arxiv.org/abs/1910.10683 §2.1), causal form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional, ScoreMod
from decoderlab.registry import ComponentConfig


@dataclass
class T5Config(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "num_buckets": "[2, inf)",
        "max_distance": "[1, inf)",
    }
    num_buckets: int = 32
    max_distance: int = 128

    def check(self, model_cfg: Any) -> list[str]:
        if self.num_buckets < 2 or self.max_distance <= self.num_buckets // 2:
            return [
                f"model.positional.num_buckets={self.num_buckets} and model.positional.max_distance="
                f"{self.max_distance}: need num_buckets >= 2 and max_distance > num_buckets // 2"
            ]
        return []


def t5_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket of a causal distance ``q_pos - k_pos`` (negative = future, mapped to bucket 0 and masked anyway).

    Distances below ``num_buckets // 2`` get their own bucket; larger ones share logarithmically wider
    buckets up to ``max_distance``, beyond which all fall in the last bucket.
    """
    n = distance.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # Clamp before the log so the small branch never computes log(0); where() discards those values anyway.
    log_ratio = torch.log(n.clamp(min=max_exact).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, n, large)


@POSITIONAL.register("t5", T5Config)
class T5Bias(Positional):
    """A learned scalar per (bucketed relative distance, head), added to the attention scores."""

    def __init__(self, cfg: T5Config, dims: ModelDims):
        super().__init__()
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.rel_bias = nn.Embedding(cfg.num_buckets, dims.n_heads)

    def bias(self, t_q: int, t_k: int) -> torch.Tensor:
        # Queries are the last t_q of t_k positions.
        device = self.rel_bias.weight.device
        q_pos, k_pos = torch.arange(t_k - t_q, t_k, device=device), torch.arange(t_k, device=device)
        buckets = t5_bucket(q_pos[:, None] - k_pos[None, :], self.num_buckets, self.max_distance)  # (Tq, Tk)
        return self.rel_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Tq, Tk)

    def score_mod(self, t_q: int, t_k: int) -> ScoreMod:
        """The bias looked up by distance: a (H, t_k) vector per forward, gathered from the bucket table outside the
        kernel. FlexAttention's backward adds each score's gradient into the captured tensor with atomics; into
        the 32-row bucket table every far pair of a batch would hit one address, into this vector at most a row's
        worth do (the embedding's own backward then sums the distances of each bucket)."""
        offset = t_k - t_q  # query q_idx sits at position q_idx + offset
        dist = torch.arange(t_k, device=self.rel_bias.weight.device)
        by_dist = self.rel_bias(t5_bucket(dist, self.num_buckets, self.max_distance)).t()  # (H, t_k)

        def t5(score, b, h, q_idx, kv_idx):
            return score + by_dist[h, (q_idx + offset - kv_idx).clamp(min=0)].to(score.dtype)  # future: masked

        return t5
