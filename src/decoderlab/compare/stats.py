"""Mean and spread over seeds: the 95% confidence interval (Student t) from 3 seeds, the range below, no SciPy.

For ``n`` values with mean ``m`` and sample standard deviation ``s`` (``n - 1`` in the denominator), the 95%
interval is ``m ± t(0.975, n - 1) * s / sqrt(n)``. ``t`` comes from a table for 1-30 degrees of freedom and from
Hill's (1970) expansion of the normal quantile beyond (error < 1e-4 there).

With 2 seeds t(0.975, 1) = 12.7 makes the interval 9x the seeds' own difference (wider than the mean itself for
noisy metrics): it says nothing a reader can use, so the table shows the two values' range (min–max) instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# t(0.975, df) for df = 1..30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054
MIN_CI_N = 3  # fewer values: the range, not a t-interval


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, n = _Z975, float(df)  # Cornish-Fisher / Hill expansion in 1/df
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / n + g2 / n**2 + g3 / n**3


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values, the half-width of its 95% interval (NaN when n < 2) and the values' range."""

    mean: float
    half: float
    n: int
    min: float = math.nan
    max: float = math.nan

    @property
    def uses_ci(self) -> bool:
        """Whether the spread shown is the t-interval (3 or more values) rather than the range."""
        return self.n >= MIN_CI_N and not math.isnan(self.half)

    @property
    def low(self) -> float:
        """Lower end of the band: mean - half-width from 3 values, the minimum below (the mean for one)."""
        return self.mean - self.half if self.uses_ci else (self.min if self.n else math.nan)

    @property
    def high(self) -> float:
        return self.mean + self.half if self.uses_ci else (self.max if self.n else math.nan)

    def fmt(self, digits: int = 4) -> str:
        """``m ± h`` (3+ values), ``m [min–max]`` (2), ``m`` (1), ``-`` (none)."""
        if self.n == 0 or math.isnan(self.mean):
            return "-"
        if self.uses_ci:
            return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"
        if self.n == 2:
            return f"{self.mean:.{digits}f} [{self.min:.{digits}f}–{self.max:.{digits}f}]"
        return f"{self.mean:.{digits}f}"


def mean_ci(values: Iterable[float | None]) -> MeanCI:
    """Mean and 95% t-interval half-width of the finite values among ``values``."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    m = sum(xs) / n
    if n == 1:
        return MeanCI(m, math.nan, 1, m, m)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return MeanCI(m, t975(n - 1) * s / math.sqrt(n), n, min(xs), max(xs))
