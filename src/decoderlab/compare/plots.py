"""PNG plots, one line per variant with a band over its seeds (the 95% t-interval of the mean from 3 seeds, the
min–max range with 2, none with 1):

- validation bits-per-byte (or loss) against step and against training time;
- training loss against step, smoothed by a debiased exponential moving average (as TensorBoard's slider), so a
  short sweep with only one or two validations still shows how each variant learned.
"""

from __future__ import annotations

from pathlib import Path

from decoderlab.compare.stats import mean_ci
from decoderlab.compare.table import Variant

EMA_WEIGHT = 0.8  # weight of the past in the smoothed training loss (per logged point)
VAL_LABELS = {"val_bpb": "validation bits per byte", "val_loss": "validation loss (nats/token)"}


def ema(values: list[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Debiased exponential moving average: s_t = w s_(t-1) + (1 - w) x_t, divided by 1 - w^t (no pull to 0)."""
    out, acc = [], 0.0
    for t, x in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * x
        out.append(acc / (1 - weight**t))
    return out


def _points(variant: Variant, field: str, x_axis: str) -> dict[float, list[tuple[float, float]]]:
    """step -> [(x, y) of each completed run] for the curve ``field`` (val_bpb, val_loss or train_loss)."""
    points: dict[float, list[tuple[float, float]]] = {}
    for run in variant.ok:
        c = run.curve
        if field == "train_loss":
            steps, ys, xs = c.train_step, ema(c.train_loss), c.train_step
        else:
            steps, ys = c.step, getattr(c, field)
            xs = c.step if x_axis == "step" else c.seconds
        for i, (step, y) in enumerate(zip(steps, ys)):
            if i < len(xs):
                points.setdefault(step, []).append((xs[i], y))
    return points


def band(variant: Variant, x_axis: str, field: str = "val_bpb") -> tuple[list[float], ...]:
    """(x, mean, low, high) of ``field`` over the variant's completed runs, aligned by step."""
    points = _points(variant, field, x_axis)
    x, mean, low, high = [], [], [], []
    for step in sorted(points):
        s = mean_ci(y for _, y in points[step])
        x.append(sum(px for px, _ in points[step]) / len(points[step]))
        mean.append(s.mean)
        low.append(s.low)
        high.append(s.high)
    return x, mean, low, high


def plot_specs(val: str) -> list[tuple[str, str, str, str, str]]:
    """(file name, curve, x axis, x label, y label) of every plot; ``val``: val_bpb or val_loss."""
    return [(f"{val}_vs_step.png", val, "step", "step", VAL_LABELS[val]),
            (f"{val}_vs_time.png", val, "seconds", "training time (s)", VAL_LABELS[val]),
            ("train_loss_vs_step.png", "train_loss", "step", "step", f"training loss (EMA {EMA_WEIGHT})")]


def write_plots(out: Path, variants: list[Variant], metric: str = "val_bpb") -> list[Path]:
    """Write the PNGs into ``out``; returns their paths. The validation curve drawn is ``metric`` when it is
    val_loss or val_bpb, else val_bpb."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = metric if metric in VAL_LABELS else "val_bpb"
    paths = []
    for name, field, axis, xlabel, ylabel in plot_specs(val):
        fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
        drawn = 0
        for i, v in enumerate(variants):
            x, mean, low, high = band(v, axis, field)
            if not x:
                continue
            color = f"C{i % 10}"
            ax.plot(x, mean, color=color, marker="o" if len(x) < 12 else None, ms=3,
                    label=f"{v.label} (n={len(v.ok)})")
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            drawn += 1
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs {xlabel} (mean over seeds; band: 95% CI from 3 seeds, min–max with 2)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no completed run with this curve (metrics.csv)", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
