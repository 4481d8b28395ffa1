"""``decoderlab-eval``: loss and bits-per-byte of trained runs at several context lengths (length extrapolation).

    decoderlab-eval outputs/2026-11-26/13-12-06 --lengths 1,2,4,8          # multiples of the training block_size
    decoderlab-eval multirun/pe_extrapolation --lengths 64,128,256 --absolute
    decoderlab-eval run_a run_b --lengths 1,2,4 --max-tokens 20000 --out compare/

Each run is evaluated on its own held-out split (its data config; the token cache is reused, and must hold the
tokenizer bound to the checkpoint). At length L the held-out ids are cut into consecutive windows of L tokens, so
every held-out token is scored exactly once at every length: the rows of one run share targets and bytes, and a
longer length only gives tokens more context. An encoding that cannot represent a length (learned positions past
their table) gets an "n/a" row saying why. Runs are found as ``decoderlab-compare`` finds them, and only a
completed one is scored (:mod:`decoderlab.outcome`): a failed run's rows say ``failed: <reason>``, an interrupted,
still running or unknown one's ``not scored: <what became of it>``. Writes ``extrapolation.csv``,
``extrapolation.md`` and ``extrapolation.png`` (loss and bits-per-byte against length).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from decoderlab import rundir
from decoderlab.checkpoint import load_decoder, read_checkpoint, require_same_tokenizer
from decoderlab.compare.runs import Run, load
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA, prepare
from decoderlab.data.module import ValWindows
from decoderlab.errors import PositionRangeError, UserError, exit_on_user_error
from decoderlab.model import Decoder
from decoderlab.overrides import varying
from decoderlab.plugins import load_plugins
from decoderlab.units import bits_per_byte

log = logging.getLogger("decoderlab")
FILES = ("extrapolation.csv", "extrapolation.md", "extrapolation.png")


@dataclass
class Row:
    run: str
    label: str
    positional: str
    block_size: int | None  # None: unknown (a run that is no result and has no config)
    length: int | None
    loss: float | None = None
    bpb: float | None = None
    tokens: int = 0
    bytes: int = 0
    note: str = ""

    @property
    def multiple(self) -> float | None:
        return self.length / self.block_size if self.length and self.block_size else None


@torch.no_grad()
def score_length(model: Decoder, ids: np.ndarray, token_bytes: np.ndarray, length: int,
                 batch_tokens: int = 8192) -> tuple[float, int, int]:
    """(summed nats, targets, target bytes) over the held-out ids (a context token, then targets) at ``length``."""
    windows = ValWindows(ids, length)
    tb = torch.as_tensor(token_bytes, dtype=torch.long)
    per_batch = max(1, batch_tokens // length)
    nats, tokens, nbytes = 0.0, 0, 0
    for start in range(0, len(windows), per_batch):
        xs, ys = zip(*(windows[i] for i in range(start, min(start + per_batch, len(windows)))))
        x, y = torch.stack(xs), torch.stack(ys)  # (B, L)
        logits = model(x)  # (B, L, V)
        nats += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100, reduction="sum"))
        counted = y[y >= 0]
        tokens += counted.numel()
        nbytes += int(tb[counted].sum())
    return nats, tokens, nbytes


def unsupported(model: Decoder, length: int) -> str | None:
    """Why ``model`` cannot run at ``length`` tokens, or None."""
    limit = model.positional.max_positions
    if limit is not None and length > limit:
        return f"n/a: {type(model.positional).__name__.lower()} table holds {limit} positions, not {length}"
    return None


def evaluate_model(model: Decoder, ids: np.ndarray, token_bytes: np.ndarray, lengths: list[int],
                   base: Row, batch_tokens: int = 8192) -> list[Row]:
    """One row per length: loss and bits-per-byte, or an "n/a" note where the encoding cannot run."""
    rows = []
    for length in lengths:
        row = Row(**{**asdict(base), "length": length})
        row.note = unsupported(model, length) or ""
        if not row.note:
            try:
                nats, row.tokens, row.bytes = score_length(model, ids, token_bytes, length, batch_tokens)
                row.loss, row.bpb = nats / max(row.tokens, 1), bits_per_byte(nats, row.bytes)
                if not math.isfinite(row.loss):
                    row.loss, row.bpb, row.note = None, None, "failed: non-finite loss"
                elif len(ids) - 1 < length:
                    row.note = f"held-out split has only {len(ids) - 1} tokens"
            except PositionRangeError as e:
                row.note = f"n/a: {e}"
        rows.append(row)
        log.info("%s @ %d: loss %s bpb %s %s", base.label, length, row.loss, row.bpb, row.note)
    return rows


def find_runs(paths: list[str]) -> list[Run]:
    """The runs under ``paths`` (run directories, or sweep directories searched for them), as
    ``decoderlab-compare`` finds them: failed, interrupted and still running ones included, with what became of
    each (:func:`decoderlab.outcome.judge`), and a sweep's points that never got a directory (invalid)."""
    return load([Path(p) for p in paths])


def held_out(run: Path, cfg: Any, tokenizer: Any) -> np.ndarray:
    """The run's held-out ids (with the leading context token) from its token cache, checked against its tokenizer."""
    data = prepare(CORPORA.build(cfg.data), TOKENIZERS.build(cfg.tokenizer), int(cfg.model.block_size))
    require_same_tokenizer(tokenizer, data.tokenizer, f"checkpoint of {run}", f"token cache {data.directory}")
    return np.asarray(data.val)


def run_labels(runs: list[Path], cfgs: list[Any]) -> list[str]:
    """Short labels: the config choices that differ between the runs (the positional encoding by default)."""
    flat = [dict(_flatten(OmegaConf.to_container(c, resolve=True))) for c in cfgs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({str(f.get(k)) for f in flat}) > 1 and not k.startswith(("logger", "data.cache"))]
    names = [k for k in differ if k.endswith(".name")] or differ
    if not names:
        return [str(f.get("model.positional.name", r.name)) for f, r in zip(flat, runs)]
    return [",".join(f"{k.removesuffix('.name').split('.')[-1]}={f.get(k)}" for k in names[:3]) for f in flat]


def _labels(runs: list[Run], cfgs: list[Any]) -> list[str]:
    """:func:`run_labels` of the runs with a config; a run without one (an invalid sweep point, a run that failed
    before writing it) is named by its overrides that differ from the others', else by its directory."""
    have = [i for i, c in enumerate(cfgs) if c is not None]
    labels = dict(zip(have, run_labels([runs[i].dir for i in have], [cfgs[i] for i in have])))
    differing = varying([r.overrides or [] for r in runs])
    return [labels[i] if i in labels else ",".join(differing[i]) or r.dir.name for i, r in enumerate(runs)]


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, node)]


def evaluate_runs(paths: list[str], lengths: list[int], absolute: bool = False, max_tokens: int | None = None,
                  batch_tokens: int = 8192) -> list[Row]:
    """Rows for every run under ``paths`` at every length (multiples of each run's block_size unless absolute).
    A run that is no result (failed, diverged, interrupted, still running: :func:`decoderlab.outcome.judge`, as in
    decoderlab-compare) gets rows saying so, never scores."""
    runs = find_runs(paths)
    cfgs = [_load_config(r.dir) if r.ok else _try_config(r.dir) for r in runs]
    rows = []
    for run, cfg, label in zip(runs, cfgs, _labels(runs, cfgs)):
        pe = str(OmegaConf.select(cfg, "model.positional.name", default="?")) if cfg is not None else "?"
        ckpt_path = rundir.last_checkpoint(run.dir)
        why = unscored(run) or ("" if ckpt_path.is_file() else f"not scored: no {ckpt_path}")
        if why:  # listed with its reason, never scored or ranked
            block = OmegaConf.select(cfg, "model.block_size", default=None) if cfg is not None else None
            block = int(block) if isinstance(block, int) and block > 0 else None
            base = Row(run=str(run.dir), label=label, positional=pe, block_size=block, length=None, note=why)
            ls = lengths if absolute else [m * block for m in lengths] if block else [None]
            rows += [Row(**{**asdict(base), "length": n}) for n in ls]
            continue
        model, tokenizer = load_decoder(read_checkpoint(ckpt_path), str(ckpt_path))
        ids = held_out(run.dir, cfg, tokenizer)
        if max_tokens:
            ids = ids[: max_tokens + 1]
        block = int(model.cfg.block_size)
        base = Row(run=str(run.dir), label=label, positional=pe, block_size=block, length=block)
        ls = lengths if absolute else [m * block for m in lengths]
        rows += evaluate_model(model, ids, tokenizer.token_bytes(), ls, base, batch_tokens)
    return rows


def unscored(run: Run) -> str:
    """Why ``run`` is not scored, as its rows say it (``failed: <reason>``, ``not scored: interrupted by SIGTERM
    at step 76 of 3000``, ``not scored: still running (...)``); empty for a completed run."""
    if run.ok:
        return ""
    return run.label if run.status == "failed" else f"not scored: {run.label}"


def _try_config(run: Path) -> Any:
    """The run's config, or None when it has none (or an unreadable one): a run that is no result may lack it."""
    try:
        return _load_config(run)
    except UserError:
        return None


def _load_config(run: Path) -> Any:
    path = run / rundir.CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run} has no config.yaml: decoderlab-eval needs the run's data config")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - a YAML error names the file
        raise UserError(f"cannot read {path}: {e}") from None


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _g(v: float | None) -> str:
    """A length, block size or multiple; empty when unknown."""
    return "" if v is None else str(v) if isinstance(v, int) else f"{v:g}"


def write_csv(rows: list[Row], path: Path) -> None:
    cols = ["label", "positional", "block_size", "length", "multiple", "loss", "bpb", "tokens", "bytes", "note", "run"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.label, r.positional, _g(r.block_size), _g(r.length), _g(r.multiple), _fmt(r.loss), _fmt(r.bpb),
                        r.tokens, r.bytes, r.note, r.run])


def markdown(rows: list[Row]) -> str:
    lines = ["| run | length | × block | loss | bits/byte | note |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.label} | {_g(r.length) or '–'} | {_g(r.multiple) or '–'} | {_fmt(r.loss) or '–'} "
                     f"| {_fmt(r.bpb) or '–'} | {r.note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Loss and bits-per-byte against length, one line per run; a dashed line at the training block_size."""
    import matplotlib  # lazy: slow to import, and only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in dict.fromkeys(r.label for r in rows):
        mine = [r for r in rows if r.label == label]
        ok = [r for r in mine if r.loss is not None]
        if not ok:  # failed, or n/a at every length: in the table, not on the figure
            continue
        name = label + (" (n/a past its table)" if len(ok) < len(mine) else "")
        for ax, key in zip(axes, ("loss", "bpb")):
            ax.plot([r.length for r in ok], [getattr(r, key) for r in ok], marker="o", label=name)
    for ax, title in zip(axes, ("validation loss (nats/token)", "bits per byte")):
        ax.set_xscale("log", base=2)
        ticks = sorted({r.length for r in rows if r.length})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        for block in sorted({r.block_size for r in rows if r.block_size}):
            ax.axvline(block, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(True, alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:  # no run scored: no legend (matplotlib would warn)
        axes[1].legend(fontsize=8)
    fig.suptitle("length extrapolation (dashed: training block_size)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[Row], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in FILES]
    write_csv(rows, paths[0])
    paths[1].write_text(markdown(rows), encoding="utf-8")
    plot(rows, paths[2])
    return paths


def parse_lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--lengths must be comma-separated integers, got '{text}'") from None
    if not lengths or min(lengths) < 1:
        raise UserError(f"--lengths must be positive integers, got '{text}'")
    return lengths


def default_out(paths: list[str]) -> Path:
    """``<run or sweep>/eval`` for one path, else ``<common parent>/eval``."""
    if len(paths) == 1:
        return Path(paths[0]) / "eval"
    return Path(os.path.commonpath([str(Path(p).resolve()) for p in paths])) / "eval"


def print_table(rows: list[Row]) -> None:
    """The rows as a rich table on stdout."""
    t = Table(title="length extrapolation", title_justify="left")
    for col in ("run", "length", "× block", "loss", "bits/byte", "note"):
        t.add_column(col, justify="right" if col in ("length", "× block", "loss", "bits/byte") else "left")
    for r in rows:
        t.add_row(Text(r.label), _g(r.length) or "–", _g(r.multiple) or "–", _fmt(r.loss) or "–", _fmt(r.bpb) or "–",
                  Text(r.note))
    Console().print(t)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``decoderlab-eval``."""
    p = argparse.ArgumentParser(prog="decoderlab-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="run directories, or sweep directories holding runs")
    p.add_argument("--lengths", default="1,2,4,8", help="comma-separated multiples of block_size (default 1,2,4,8)")
    p.add_argument("--absolute", action="store_true", help="--lengths are token counts, not multiples")
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first N held-out tokens")
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward pass")
    p.add_argument("--out", default=None, help="output directory (default: <run>/eval, or the runs' common parent)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    with exit_on_user_error():
        load_plugins()
        rows = evaluate_runs(args.paths, parse_lengths(args.lengths), args.absolute, args.max_tokens,
                             args.batch_tokens)
        files = write_outputs(rows, Path(args.out) if args.out else default_out(args.paths))
    print_table(rows)
    for f in files:
        sys.stdout.write(f"wrote {f}\n")


if __name__ == "__main__":
    main()
