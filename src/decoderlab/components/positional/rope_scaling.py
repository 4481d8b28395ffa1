"""RoPE frequencies and context-extension scaling: linear position interpolation, NTK-aware base, YaRN.

- linear: Chen et al. 2023, https://arxiv.org/abs/2306.15595 (positions divided by ``factor``).
- ntk: bloc97's NTK-aware scaling, https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ (base grows by
  ``factor^(d/(d-2))``, so the highest frequency is kept and the lowest is interpolated by exactly ``factor``).
- yarn: Peng et al. 2023, https://arxiv.org/abs/2309.00071 §3.2-3.4 ("NTK-by-parts" interpolation plus an
  attention temperature), with the same formula as HF transformers' ``_compute_yarn_parameters``.

Every function returns frequencies in float64, so tests can compare them exactly.
"""

from __future__ import annotations

import math

import torch

SCALINGS = ("none", "linear", "ntk", "yarn")


def base_inv_freq(dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/dim) for i < dim/2: the rotary frequency of pair i; shape (dim/2,), float64."""
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def yarn_mscale(factor: float) -> float:
    """YaRN's attention scale sqrt(1/t) = 0.1 ln(s) + 1 (YaRN §3.4), applied to cos and sin of q and k."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def yarn_correction_range(
    dim: int, base: float, original_max_positions: int, beta_fast: float, beta_slow: float
) -> tuple[float, float]:
    """Pair indices (low, high) where the ramp between extrapolation and interpolation starts and ends.

    Pair i makes ``L / wavelength_i`` full turns over the original context L; pairs with more than ``beta_fast``
    turns are kept (extrapolated), pairs with fewer than ``beta_slow`` are interpolated by ``factor``.
    """

    def pair_of(turns: float) -> float:  # the (fractional) pair index that makes `turns` turns over L
        return dim * math.log(original_max_positions / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = math.floor(pair_of(beta_fast)), math.ceil(pair_of(beta_slow))
    return max(low, 0), min(high, dim - 1)


def yarn_inv_freq(
    dim: int, base: float, factor: float, original_max_positions: int, beta_fast: float, beta_slow: float
) -> torch.Tensor:
    """NTK-by-parts frequencies: a linear ramp in pair index between theta_i (fast pairs) and theta_i / factor."""
    theta = base_inv_freq(dim, base)  # (dim/2,)
    low, high = yarn_correction_range(dim, base, original_max_positions, beta_fast, beta_slow)
    span = (high - low) or 0.001  # avoid a division by zero when the ramp collapses to a step
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / span).clamp(0, 1)  # 0: keep, 1: interpolate
    return theta / factor * ramp + theta * (1 - ramp)


def scaled_inv_freq(
    dim: int, base: float, scaling: str = "none", factor: float = 1.0, original_max_positions: int | None = None,
    beta_fast: float = 32.0, beta_slow: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """(inv_freq (dim/2,) float64, magnitude applied to cos/sin) for one scaling method."""
    if scaling == "none":
        return base_inv_freq(dim, base), 1.0
    if scaling == "linear":  # angle(pos) = (pos / factor) * theta_i
        return base_inv_freq(dim, base) / factor, 1.0
    if scaling == "ntk":
        return base_inv_freq(dim, base * factor ** (dim / (dim - 2))), 1.0
    if scaling == "yarn":
        if original_max_positions is None:
            raise ValueError("yarn scaling needs original_max_positions")
        inv = yarn_inv_freq(dim, base, factor, original_max_positions, beta_fast, beta_slow)
        return inv, yarn_mscale(factor)
    raise ValueError(f"unknown rope scaling '{scaling}'; valid: {', '.join(SCALINGS)}")
