"""A self-contained HTML report: inline CSS, PNGs inlined as base64 data URIs, no script, no external asset."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from decoderlab.compare.runs import Run
from decoderlab.compare.table import SPREAD_NOTE, Variant, display_keys, ranked_by, rows

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .spread { display: block; color: #666; font-size: 85%; }
.wide { overflow-x: auto; }
tr.failed td { background: #fff0f0; }
.status-failed { color: #b00020; font-weight: 600; }
.status-completed { color: #137333; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 3px; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption>' \
           f"</figure>"


def _cell(text: str) -> str:
    """A mean with its spread (``± h`` or ``[min–max]``) below it in small grey type, so wide tables fit."""
    for sep in (" ± ", " ["):
        if sep in text:
            value, spread = text.split(sep, 1)
            return f'{_e(value)}<span class="spread">{_e(sep.strip() + (" " if sep == " ± " else "") + spread)}</span>'
    return _e(text)


def _results(variants: list[Variant], metric: str) -> str:
    table = rows(variants, metric)
    if not table:
        return "<p>No runs.</p>"
    cols = list(table[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for v, r in zip(variants, table):
        cls = ' class="failed"' if not v.ok else ""
        cells = "".join(f'<td class="num">{_cell(r[c])}</td>' if c not in ("variant", "failed") else f"<td>{_e(r[c])}</td>"
                        for c in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="wide"><table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _runs(runs: list[Run], labels: dict[int, str]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("variant", "run dir", "seed", "status", "val bits/byte", "reason"))
    body = []
    for r in runs:
        bpb = r.metric("val_bpb")
        cls = ' class="failed"' if not r.ok else ""
        body.append(
            f"<tr{cls}><td>{_e(labels.get(id(r), ''))}</td><td><code>{_e(r.dir)}</code></td>"
            f"<td>{_e(r.config.get('seed', ''))}</td><td class=\"status-{_e(r.status)}\">{_e(r.status)}</td>"
            f"<td class=\"num\">{'-' if bpb is None else f'{bpb:.4f}'}</td><td>{_e(r.reason)}</td></tr>")
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def write_html(path: Path, variants: list[Variant], keys: list[str], runs: list[Run], plots: list[Path],
               sources: list[str], labels: dict[int, str], metric: str = "val_bpb") -> None:
    failed = [r for r in runs if not r.ok]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>decoderlab comparison</title><style>{CSS}</style></head><body>",
        "<h1>decoderlab comparison</h1>",
        f"<p>{len(runs)} runs ({len(failed)} failed) in {len(variants)} variants, from "
        f"{', '.join(f'<code>{_e(s)}</code>' for s in sources)}; generated {_e(time.strftime('%Y-%m-%d %H:%M'))}."
        f"</p><p>Varying: {', '.join(f'<code>{_e(k)}</code>' for k in display_keys(keys)) or '(none)'}; variants "
        f"are grouped by the config keys that vary, the seed left out, and {_e(ranked_by(metric))}. "
        f"{_e(SPREAD_NOTE)}</p>",
        "<h2>Results</h2>", _results(variants, metric),
        "<h2>Curves</h2>",
        *[_img(p, p.stem.replace("_", " ")) for p in plots],
        "<p>A variant without a curve has no <code>metrics.csv</code> (no CSV logger) or no completed run.</p>",
    ]
    if failed:
        parts += [f'<h2 id="failed">Failed runs ({len(failed)})</h2><ul>']
        parts += [f"<li><code>{_e(r.dir)}</code>: <span class=\"status-failed\">{_e(r.label)}</span></li>"
                  for r in failed]
        parts += ["</ul>"]
    parts += ["<h2>All runs</h2>", _runs(runs, labels), "</body></html>"]
    path.write_text("\n".join(parts), encoding="utf-8")
