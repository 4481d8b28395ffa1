"""PNG plots: validation bits-per-byte against step and against training time, one line per variant with a
band over its seeds (the 95% t-interval of the mean at each validation step; none for a single seed)."""

from __future__ import annotations

import math
from pathlib import Path

from decoderlab.compare.stats import mean_ci
from decoderlab.compare.table import Variant

# Time: a logged ``time/*`` column (wall seconds since training started), else training time spread over steps.
PLOTS = (("val_bpb_vs_step.png", "step", "step"), ("val_bpb_vs_time.png", "seconds", "time (s)"))


def band(variant: Variant, x_axis: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, low, high) of val bpb over the variant's completed runs, aligned by step."""
    points: dict[float, list[tuple[float, float]]] = {}
    for run in variant.ok:
        c = run.curve
        xs = c.step if x_axis == "step" else c.seconds
        for i, (step, bpb) in enumerate(zip(c.step, c.val_bpb)):
            if i < len(xs):
                points.setdefault(step, []).append((xs[i], bpb))
    x, mean, low, high = [], [], [], []
    for step in sorted(points):
        ci = mean_ci(b for _, b in points[step])
        x.append(sum(px for px, _ in points[step]) / len(points[step]))
        mean.append(ci.mean)
        half = 0.0 if math.isnan(ci.half) else ci.half
        low.append(ci.mean - half)
        high.append(ci.mean + half)
    return x, mean, low, high


def write_plots(out: Path, variants: list[Variant]) -> list[Path]:
    """Write the PNGs into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, axis, xlabel in PLOTS:
        fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
        drawn = 0
        for i, v in enumerate(variants):
            x, mean, low, high = band(v, axis)
            if not x:
                continue
            color = f"C{i % 10}"
            ax.plot(x, mean, color=color, marker="o" if len(x) < 3 else None, ms=3,
                    label=f"{v.label} (n={len(v.ok)})")
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            drawn += 1
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation bits per byte")
        ax.set_title(f"val bits/byte vs {xlabel} (mean, 95% CI over seeds)")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no completed run with a validation curve", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
