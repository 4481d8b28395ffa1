"""``decoderlab-plot``: PNG figures of what each positional encoding does (matplotlib, Agg backend).

    decoderlab-plot [--out DIR] [--d-model 64] [--n-heads 4] [--length 128] [names...]
    decoderlab-plot --run RUN_DIR_or_CKPT [--out DIR]      # the positional encoding a run trained


With no names it writes four overview figures (the sinusoidal PE matrix, RoPE's relative score against distance
for several bases and scalings, ALiBi's bias matrices, T5's bucket matrix) and one figure per registered encoding
(plugins included). With names, only those encodings' figures. Every encoding goes through one generic path that
draws each hook it implements: ``embed`` as a position x dimension heatmap, ``rotate`` as the query-key score against
distance, ``bias`` as per-head bias matrices. Components are built from their registered default config, so an
encoding with parameters (learned, t5) is drawn at its random initialization and captioned "initial"; fixed ones
are captioned "fixed". ``--run`` draws the trained model's own encoding (captioned "trained", with the step): the
same hooks plus, for a learned table, the cosine similarity of position vectors, and for a bias, the bias against
distance of every head (T5's learned buckets; ALiBi's slopes are the lines' gradients).
"""

from __future__ import annotations

import argparse
import logging
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from decoderlab.components.base import ModelDims  # noqa: E402
from decoderlab.components.positional import POSITIONAL, Positional  # noqa: E402
from decoderlab.components.positional.alibi import alibi_slopes  # noqa: E402
from decoderlab.components.positional.rope_scaling import scaled_inv_freq  # noqa: E402
from decoderlab.components.positional.sinusoidal import sinusoid_table  # noqa: E402
from decoderlab.components.positional.t5 import t5_bucket  # noqa: E402

log = logging.getLogger(__name__)
DPI = 110


def build_positional(name: str, d_model: int, n_heads: int, length: int) -> Positional:
    """The encoding ``name`` built from its registered default config for a model of these dimensions."""
    dims = ModelDims(d_model=d_model, n_heads=n_heads, n_layers=1, block_size=length, vocab_size=1)
    torch.manual_seed(0)  # learned tables (learned, t5) at a reproducible initialization
    return POSITIONAL.build(POSITIONAL.default_config(name), dims=dims)


def causal(m: torch.Tensor) -> torch.Tensor:
    """NaN (drawn blank) above the diagonal of the last two dims: those scores are masked in a causal decoder."""
    t_q, t_k = m.shape[-2:]
    return m.masked_fill(torch.ones(t_q, t_k, dtype=torch.bool).triu(1), float("nan"))


def rotated_scores(pe: Positional, head_dim: int, length: int) -> torch.Tensor:
    """S[m, n] = rot(q, m) . rot(k, n) / |q|^2 for an all-ones q = k: 1 on the diagonal, and how a rotary encoding
    modulates an aligned query-key pair with position (the long-term-decay picture of Su et al. §3.4.3)."""
    ones = torch.ones(1, 1, length, head_dim, dtype=torch.float64)  # (B=1, H=1, T, D)
    with torch.no_grad():
        q, k = pe.rotate(ones, ones, 0)  # positions 0 .. length - 1
    return q[0, 0] @ k[0, 0].T / head_dim  # (T, T)


def _heatmap(ax: plt.Axes, m: torch.Tensor, title: str, xlabel: str, ylabel: str, cmap: str = "RdBu_r") -> None:
    m = m.detach().double()
    finite = m[torch.isfinite(m)]
    lim = float(finite.abs().max()) if finite.numel() else 1.0
    signed = bool((finite < 0).any() and (finite > 0).any())
    kw = {"vmin": -lim, "vmax": lim} if signed else {"cmap": "viridis"}
    im = ax.imshow(m.numpy(), aspect="auto", interpolation="nearest", **({"cmap": cmap} | kw))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def hook_panels(pe: Positional, d_model: int, n_heads: int, length: int) -> list[Callable[[plt.Axes], None]]:
    """One drawing function per panel: embed -> heatmap; rotate -> score matrix and curve; bias -> per head."""
    panels = []
    if pe.embeds:
        with torch.no_grad():
            added = pe.embed(torch.zeros(1, length, d_model), 0)[0]  # (T, d_model): what is added
        panels.append(lambda ax: _heatmap(ax, added, "embed(0, pos): added to token embeddings", "dimension",
                                          "position"))
    if pe.rotates:
        s = rotated_scores(pe, d_model // n_heads, length)  # (T, T)
        panels.append(lambda ax: _heatmap(ax, causal(s), "rotate: aligned q.k / |q|^2", "key n", "query m"))
        panels.append(lambda ax: _curve(ax, s[:, 0], "rotate: aligned q.k vs distance", "distance m - n"))
    if pe.biases:
        with torch.no_grad():
            bias = causal(pe.bias(length, length)[0])  # (H, T, T)
        for h in range(min(n_heads, 4)):
            panels.append(lambda ax, h=h: _heatmap(ax, bias[h], f"bias, head {h}", "key j", "query i"))
    return panels


def _curve(ax: plt.Axes, y: torch.Tensor, title: str, xlabel: str, ylabel: str = "score") -> None:
    ax.plot(y.numpy(), lw=1.2)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)


def _identity_panel(ax: plt.Axes) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, "Every hook is the identity:\nno positional signal. Order reaches\nthe model only through "
            "the causal mask.", ha="center", va="center", fontsize=10)


def state_label(pe: Positional, trained: str | None = None) -> str:
    """What the figure shows: ``trained (...)``, ``initial`` (random parameters) or ``fixed`` (none to learn)."""
    if trained:
        return f"trained ({trained})"
    if any(True for _ in pe.parameters()):
        return "initial: random initialization (seed 0), not a trained model; use --run RUN_DIR for one"
    return "fixed: no learned parameters, the same before and after training"


def plot_positional(name: str, out: Path, d_model: int, n_heads: int, length: int, pe: Positional | None = None,
                    trained: str | None = None) -> Path:
    """The generic figure of any registered encoding: one panel per hook it implements (or a note: none)."""
    pe = pe if pe is not None else build_positional(name, d_model, n_heads, length)
    panels = hook_panels(pe, d_model, n_heads, length) or [_identity_panel]
    if trained:
        panels += run_panels(pe, n_heads, length)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.4 * len(panels), 5.5), 4.0), squeeze=False)
    for ax, draw in zip(axes[0], panels):
        draw(ax)
    title = f"model/positional={name}, {state_label(pe, trained)}. {POSITIONAL.get(name).summary}"
    fig.suptitle(textwrap.fill(title, width=int(13 * fig.get_figwidth())), fontsize=9)
    return _save(fig, out / f"{'run_' if trained else ''}positional_{name}.png")


def cosine_similarity(table: torch.Tensor) -> torch.Tensor:
    """(T, T) cosine similarity of the rows of a (T, d) position table."""
    unit = torch.nn.functional.normalize(table.double(), dim=-1)
    return unit @ unit.T


def bias_by_distance(pe: Positional, length: int) -> torch.Tensor:
    """(H, length) bias of the last query to the key d positions back, d = 0..length-1 (a causal row)."""
    with torch.no_grad():
        bias = pe.bias(length, length)[0]  # (H, T, T)
    return bias[:, -1].flip(-1).double()  # (H, T): index d = distance


def run_panels(pe: Positional, n_heads: int, length: int) -> list[Callable[[plt.Axes], None]]:
    """Extra panels of a trained encoding: table similarity (learned tables) and bias vs distance per head."""
    panels: list[Callable[[plt.Axes], None]] = []
    table = getattr(getattr(pe, "wpe", None), "weight", None)
    if table is not None:
        sim = cosine_similarity(table[:length].detach())
        panels.append(lambda ax: _heatmap(ax, sim, "cosine similarity of position vectors", "position",
                                          "position"))
        near = torch.stack([sim.diagonal(d).mean() for d in range(length)])  # mean similarity at distance d
        panels.append(lambda ax: _curve(ax, near, "mean similarity vs distance", "distance |i - j|",
                                        "cosine similarity"))
    if pe.biases:
        by_dist = bias_by_distance(pe, length)

        def draw(ax: plt.Axes) -> None:
            for h in range(by_dist.shape[0]):
                ax.plot(by_dist[h].numpy(), lw=1, label=f"head {h}")
            ax.set(title="bias vs distance, every head", xlabel="distance i - j", ylabel="bias")
            ax.legend(fontsize=7, ncol=2)

        panels.append(draw)
    return panels


def plot_run(run: Path, out: Path) -> Path:
    """The positional encoding of a trained run (a run directory or a checkpoint), captioned with its step."""
    from decoderlab.checkpoint import load_decoder, read_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(run)[0]
    ckpt = read_checkpoint(path)  # read (and verified) once: the weights and the step it was saved at
    model, _ = load_decoder(ckpt, str(path))
    step = ckpt.get("global_step")
    c = model.cfg
    name = POSITIONAL.build_config(c.positional).name
    label = f"{run}" + (f", step {step}" if step is not None else "")
    out.mkdir(parents=True, exist_ok=True)
    return plot_positional(name, out, c.d_model, c.n_heads, c.block_size, pe=model.positional, trained=label)


def plot_sinusoidal(out: Path, d_model: int, length: int) -> Path:
    """The sinusoidal PE matrix: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _heatmap(ax, sinusoid_table(length, d_model, 10000.0), f"sinusoidal PE (d_model={d_model}, base 10000)",
             "dimension (even: sin, odd: cos; frequency falls to the right)", "position")
    return _save(fig, out / "sinusoidal_pe.png")


def plot_rope(out: Path, d_model: int, length: int) -> Path:
    """RoPE's relative score against distance: for several bases, then for each context-extension scaling."""
    head_dim = d_model  # one wide head: many frequencies, smooth curves
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    dist = torch.arange(4 * length, dtype=torch.float64)
    for base in (100.0, 1000.0, 10000.0, 500000.0):
        inv_freq, _ = scaled_inv_freq(head_dim, base)
        a1.plot((dist[:, None] * inv_freq).cos().mean(-1).numpy(), label=f"base {base:g}", lw=1)
    a1.set(title=f"RoPE: aligned q.k / |q|^2 vs distance (head_dim {head_dim})", xlabel="distance m - n",
           ylabel="score")
    for scaling in ("none", "linear", "ntk", "yarn"):
        factor = 1.0 if scaling == "none" else 4.0
        inv_freq, mscale = scaled_inv_freq(head_dim, 10000.0, scaling, factor, length)
        label = {"none": "none", "yarn": "yarn x4 (x mscale^2)"}.get(scaling, f"{scaling} x4")
        a2.plot(((dist[:, None] * inv_freq).cos().mean(-1) * mscale**2).numpy(), label=label, lw=1)
    a2.axvline(length, color="grey", ls=":", lw=1)
    a2.set(title=f"context extension x4 (trained context {length}, dotted)", xlabel="distance m - n")
    for ax in (a1, a2):
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    return _save(fig, out / "rope_distance.png")


def plot_alibi(out: Path, length: int, n_heads: int = 8) -> Path:
    """ALiBi: bias matrices -m_h (i - j) of three of eight heads, the bias against distance, the slopes."""
    slopes = alibi_slopes(n_heads)
    dist = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).double()  # (T, T)
    fig, axes = plt.subplots(1, 5, figsize=(21, 4), gridspec_kw={"width_ratios": [1, 1, 1, 1.1, 1.1]})
    for ax, h in zip(axes[:3], (0, 3, n_heads - 1)):
        _heatmap(ax, causal(-slopes[h] * dist), f"head {h}: slope 2^{math.log2(slopes[h]):.0f}", "key j",
                 "query i")
    d = torch.arange(length, dtype=torch.float64)
    for h, m in enumerate(slopes):
        axes[3].plot(d.numpy(), (-m * d).numpy(), label=f"head {h}", lw=1)
    axes[3].set(title=f"bias vs distance ({n_heads} heads)", xlabel="distance i - j", ylabel="bias")
    axes[3].legend(fontsize=7, ncol=2)
    for h, style in ((8, "o-"), (6, "s--")):
        axes[4].semilogy(range(h), alibi_slopes(h), style, label=f"{h} heads" + ("" if h == 8 else " (interleaved)"))
    axes[4].set(title="slopes: geometric for 2^k heads", xlabel="head", ylabel="slope m_h")
    axes[4].legend()
    return _save(fig, out / "alibi_bias.png")


def plot_t5(out: Path, length: int, num_buckets: int = 32, max_distance: int = 128) -> Path:
    """T5's bucket of each (query, key) pair and the bucket against distance (exact, then logarithmic)."""
    dist = torch.arange(length)[:, None] - torch.arange(length)[None, :]  # (T, T)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    _heatmap(a1, causal(t5_bucket(dist, num_buckets, max_distance).double()), "T5 bucket of (query, key)",
             "key j", "query i")
    d = torch.arange(0, 2 * max_distance)
    a2.step(d.numpy(), t5_bucket(d, num_buckets, max_distance).numpy(), where="post")
    a2.axvline(num_buckets // 2, color="grey", ls=":", lw=1)
    a2.axvline(max_distance, color="grey", ls="--", lw=1)
    a2.set(title=f"bucket vs distance ({num_buckets} buckets; exact < {num_buckets // 2}, "
                 f"log to {max_distance})", xlabel="distance i - j", ylabel="bucket")
    return _save(fig, out / "t5_buckets.png")


def write_figures(out: Path, names: Sequence[str], d_model: int, n_heads: int, length: int) -> list[Path]:
    """All figures for ``names`` (none: the overview figures and every registered encoding)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if not names:
        paths += [plot_sinusoidal(out, d_model, length), plot_rope(out, d_model, length),
                  plot_alibi(out, min(length, 32)), plot_t5(out, length)]
    return paths + [plot_positional(n, out, d_model, n_heads, length) for n in (names or POSITIONAL.names())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="decoderlab-plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="positional encodings to draw (default: all registered)")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="output folder (default: plots)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="number of positions drawn")
    parser.add_argument("--run", type=Path, default=None,
                        help="a run directory or checkpoint: draw its trained encoding (sizes from the run)")
    args = parser.parse_args(argv)
    from decoderlab.plugins import load_plugins

    load_plugins()  # plugin encodings are drawn like core ones
    if args.run is not None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.names:
            parser.error("--run draws the run's own encoding: give no names with it")
        from decoderlab.errors import exit_on_user_error

        with exit_on_user_error(2):
            plot_run(args.run, args.out)
        return
    unknown = [n for n in args.names if n not in POSITIONAL]
    if unknown:
        parser.error(f"unknown model/positional {', '.join(map(repr, unknown))}. Valid names: "
                     f"{', '.join(POSITIONAL.names())}")
    if args.d_model % args.n_heads or args.length < 2:
        parser.error(f"--d-model {args.d_model} must be divisible by --n-heads {args.n_heads}, --length >= 2")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_figures(args.out, args.names, args.d_model, args.n_heads, args.length)
    log.info("%d figure(s) in %s", len(paths), args.out)


if __name__ == "__main__":
    main()
