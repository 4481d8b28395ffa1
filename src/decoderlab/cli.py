"""``decoderlab-components``: every registry, its options, their fields and defaults (plugins included)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from decoderlab.components import MODEL_REGISTRIES
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA
from decoderlab.plugins import load_plugins


def all_registries() -> dict:
    """Every registry by its group (plugins loaded first): tokenizer, data and the model slots."""
    load_plugins()
    return {"tokenizer": TOKENIZERS, "data": CORPORA, **MODEL_REGISTRIES}


def components_main(argv: list[str] | None = None) -> None:
    """Console entry point ``decoderlab-components``."""
    parser = argparse.ArgumentParser(prog="decoderlab-components", description=__doc__)
    parser.add_argument("group", nargs="?", help="show only this registry (e.g. model/positional)")
    args = parser.parse_args(argv)
    regs = all_registries()
    console = Console()
    if args.group and args.group not in regs:
        console.print(f"unknown registry '{args.group}'. Valid: {', '.join(regs)}", markup=False)
        raise SystemExit(2)
    for group, reg in regs.items():
        if args.group and group != args.group:
            continue
        t = Table(title=f"{group}   (select with {group}=<name>)", title_justify="left", show_lines=False)
        t.add_column("name", style="bold cyan")
        t.add_column("what it is")
        t.add_column("fields (key=default)")
        t.add_column("from", style="dim")
        for e in reg:
            fields = "  ".join(f"{n}={d!r}" for n, _, d in e.fields())
            src = "core" if e.source.startswith("decoderlab.") else e.source
            t.add_row(e.name, e.summary, fields or "-", src)
        console.print(t)
