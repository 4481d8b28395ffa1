"""Human-readable output on the console (rich): the end-of-run summary, the console every table prints to."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger("decoderlab")


def make_console() -> Console:
    """A rich console; when output goes to a file or pipe, 160 columns rather than rich's 80 (no wrapping)."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _fmt(v: Any, spec: str = ",.4f") -> str:
    return "-" if v is None else format(v, spec)


def summary_line(s: dict[str, Any]) -> str:
    """The run summary on one line, as nanoGPT ends its log: sizes, steps, losses, speed, times, where things are."""
    p = s["params"]
    return (f"summary: {s['steps']:,} steps, {s['tokens_seen']:,} tokens, {p['total']:,} parameters "
            f"({p['non_embedding']:,} non-embedding); train loss {_fmt(s.get('train_loss'))}, val loss "
            f"{_fmt(s.get('val_loss'))}, val bpb {_fmt(s.get('val_bpb'))}; {_fmt(s.get('tokens_per_s'), ',.0f')} "
            f"tokens/s; train {s.get('train_seconds', 0):.1f} s, wall {s.get('wall_seconds', 0):.1f} s; "
            f"run dir {s['run_dir']}; checkpoint {s['checkpoint']}")


def print_summary(s: dict[str, Any], console: Console | None = None) -> None:
    """The end-of-run table: sizes, steps, losses, bits-per-byte, speed, where things are, and the sample; the
    same figures as one line in ``train.log`` only (the console handler drops ``file_only`` records)."""
    log.info(summary_line(s), extra={"file_only": True})
    console = console or Console()
    p = s["params"]
    t = Table(title="decoderlab run summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("components", ", ".join(f"{k}={v}" for k, v in s.get("choices", {}).items())),
        ("parameters", f"{p['total']:,} ({p['embedding']:,} embedding, {p['non_embedding']:,} non-embedding)"),
        ("steps", f"{s['steps']:,}"),
        ("tokens seen", f"{s['tokens_seen']:,}"),
        ("train loss", _fmt(s.get("train_loss"))),
        ("val loss", _fmt(s.get("val_loss"))),
        ("val bits/byte", _fmt(s.get("val_bpb"))),
        ("tokens/s", _fmt(s.get("tokens_per_s"), ",.0f")),
        ("train time", f"{s.get('train_seconds', 0):.1f} s (wall {s.get('wall_seconds', 0):.1f} s)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    # Paths on their own lines, never wrapped inside a table cell, so they can be copied.
    console.print(f"run dir:    {s['run_dir']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"checkpoint: {s['checkpoint']}", markup=False, highlight=False, soft_wrap=True)
    console.rule("sample")
    console.print(s.get("sample", ""), markup=False, highlight=False)
    console.rule()
