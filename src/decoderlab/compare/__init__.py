"""``decoderlab-compare``: a comparison report of local runs, no server needed.

    decoderlab-compare multirun/2026-05-01/12-00-00              # a sweep directory -> <sweep>/report/
    decoderlab-compare runs/a runs/b --out report/ --group-by choice/model/positional
    decoderlab-compare multirun/... --metric tokens_per_s        # rank by throughput instead of val bits/byte

Reads each run directory (``config.yaml``, ``.hydra/overrides.yaml``, ``status.json``, ``summary.json``,
``metrics.csv``; a sweep's ``sweep_summary.json``), finds the config keys that vary, groups the runs by them with
the seed left out, and writes into ``--out``:

* ``report.md`` and ``report.csv``: per variant, ranked by ``--metric`` (default val bits-per-byte): final val loss,
  val bits-per-byte, train loss, tokens/s, train time (in training steps) and total time (the job's start to exit,
  as in the sweep table), parameters; mean ± 95% CI over seeds (Student t) from 3 seeds, mean [min–max] with 2;
  ``runs.csv``: one row per run, failed ones with their reason;
* ``val_bpb_vs_step.png``, ``val_bpb_vs_time.png`` (``val_loss_*`` with ``--metric val_loss``) and
  ``train_loss_vs_step.png`` (EMA-smoothed): one line per variant with its band over seeds;
* ``report.html``: all of it in one self-contained file (images inlined) that opens in any browser.

Failed runs are listed as failed with their reason, never dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from decoderlab.errors import UserError, exit_on_user_error

log = logging.getLogger("decoderlab.compare")


def build_report(paths: list[Path], out: Path, group_by: list[str] | None = None,
                 metric: str = "val_bpb") -> dict[str, Path]:
    """Load runs under ``paths`` and write the report files into ``out``, variants ranked by ``metric``;
    returns the files by kind."""
    from decoderlab.compare.html import write_html
    from decoderlab.compare.plots import write_plots
    from decoderlab.compare.runs import load
    from decoderlab.compare.table import (
        check_metric,
        group,
        ranked,
        write_csv,
        write_markdown,
        write_runs_csv,
    )

    check_metric(metric)
    runs = load(paths)
    variants, keys = group(runs, group_by)
    variants = ranked(variants, metric)
    labels = {id(r): v.label for v in variants for r in v.runs}
    make_out(out)
    files = {"markdown": out / "report.md", "csv": out / "report.csv", "runs_csv": out / "runs.csv",
             "html": out / "report.html"}
    try:
        write_markdown(files["markdown"], variants, keys, runs, metric)
        write_csv(files["csv"], variants, keys)
        write_runs_csv(files["runs_csv"], runs, labels)
        plots = write_plots(out, variants, metric)
        write_html(files["html"], variants, keys, runs, plots, [str(p) for p in paths], labels, metric)
    except OSError as e:  # a full disk, a folder made read-only meanwhile
        raise UserError(f"cannot write the report into {out}: {e.strerror or e}") from None
    files.update({p.stem: p for p in plots})
    _print(variants, keys, runs, metric)
    return files


def make_out(out: Path) -> None:
    """Create the output folder, or a one-line error naming it (a file, a read-only or impossible place)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the report folder --out {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the report into --out {out}: permission denied")


def _print(variants: list, keys: list[str], runs: list, metric: str) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from decoderlab.compare.table import display_keys, ranked_by, rows
    from decoderlab.report import make_console

    table = rows(variants, metric)
    title = f"{len(runs)} runs, {len(variants)} variants, {ranked_by(metric)} (mean ± 95% CI over 3+ seeds, " \
            "[min–max] over 2)"
    t = Table(title=escape(title), title_justify="left",  # escaped: rich would take "[min–max]" for markup
              caption=escape(f"varying: {', '.join(display_keys(keys)) or '(none)'}"), caption_justify="left")
    for col in (table[0] if table else {}):
        t.add_column(col, overflow="fold")
    for r in table:
        t.add_row(*(Text(v) for v in r.values()))
    make_console().print(t)


def default_out(paths: list[Path]) -> Path:
    return paths[0] / "report" if len(paths) == 1 and paths[0].is_dir() else Path("compare-report")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``decoderlab-compare``."""
    from decoderlab.compare.table import RANKABLE

    p = argparse.ArgumentParser(prog="decoderlab-compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="sweep directories or run directories")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <sweep>/report)")
    p.add_argument("--metric", default="val_bpb", choices=RANKABLE,
                   help="the figure variants are ranked by (default: val_bpb); val_loss also switches the curves")
    p.add_argument("--group-by", default=None,
                   help="comma-separated config keys defining a variant (default: every key that varies, seed aside)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or default_out(args.paths)
    with exit_on_user_error(2):
        group_by = [k.strip() for k in (args.group_by or "").split(",") if k.strip()] or None
        files = build_report(args.paths, out, group_by, args.metric)
    log.info("report: %s", files["html"])
    for kind, path in files.items():
        log.info("  %-16s %s", kind, path)
