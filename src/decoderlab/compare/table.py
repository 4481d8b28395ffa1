"""Group runs into variants (by the config keys that vary, the seed left out) and tabulate them."""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decoderlab.compare.runs import BOOKKEEPING, Run
from decoderlab.compare.stats import MeanCI, mean_ci
from decoderlab.errors import UserError
from decoderlab.overrides import override_key, variant_label, varying

SEED_KEYS = ("seed",)
# (column, run figure, digits) of the results table; each is a mean and its spread over the variant's seeds.
# Times: "train s" is the time spent in training steps; "total s" the job's wall time from start to exit (the
# sweep table's figure; for a run outside a sweep, or skipped on a re-run, the one it recorded in summary.json).
METRICS = (("val loss", "val_loss", 4), ("val bits/byte", "val_bpb", 4), ("train loss", "train_loss", 4),
           ("tokens/s", "tokens_per_s", 0), ("train s", "train_seconds", 1), ("total s", "total_seconds", 1))
RANKABLE = tuple(name for _, name, _ in METRICS)
HIGHER_IS_BETTER = ("tokens_per_s",)
DEFAULT_METRIC = "val_bpb"
PARAMS = (("params", "params.total"), ("non-embedding", "params.non_embedding"))


@dataclass
class Variant:
    label: str
    key: tuple
    values: dict[str, Any]  # the varying config keys and their values
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.ok]

    def stat(self, field_name: str) -> MeanCI:
        return mean_ci(r.metric(field_name) for r in self.ok)

    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]


def _bookkeeping(key: str) -> bool:
    """Config keys (``logger.x``) and group overrides (``logger``, ``hydra/launcher``) that are not the experiment."""
    return key.startswith(BOOKKEEPING) or key.replace("/", ".").split(".")[0] in ("logger", "hydra", "sample")


def varying_keys(runs: list[Run], exclude: tuple[str, ...] = SEED_KEYS) -> list[str]:
    """Config keys whose value differs between runs (missing counts as a value), bookkeeping left out."""
    with_cfg = [r for r in runs if r.config]
    keys = sorted({k for r in with_cfg for k in r.config})
    out = []
    for k in keys:
        if k in exclude or _bookkeeping(k):
            continue
        if len({repr(r.config.get(k, "<unset>")) for r in with_cfg}) > 1:
            out.append(k)
    return out


def _override_labels(runs: list[Run]) -> list[str] | None:
    """Each run's variant name from its varying overrides (seed and bookkeeping left out), when every run has
    its overrides (``.hydra/overrides.yaml``, or the launcher's record for a job that never started)."""
    if not runs or any(r.overrides is None for r in runs):
        return None
    per_run = varying([[o for o in r.overrides or [] if not _bookkeeping(override_key(o))] for r in runs])
    return [variant_label(v, SEED_KEYS) for v in per_run]


def group(runs: list[Run], by: list[str] | None = None) -> tuple[list[Variant], list[str]]:
    """Variants in order of first appearance, and the varying config keys.

    A variant is the runs that share their varying overrides (the user's own words; the seed aside) or, for
    runs without ``.hydra/overrides.yaml``, their varying config values; ``by`` names the keys instead.
    """
    keys = varying_keys(runs)
    if by:
        check_group_by(runs, by, keys)
        labels = [",".join(f"{k}={r.config.get(k, '-')}" for k in by) for r in runs]
    else:
        labels = _override_labels(runs) or [
            ",".join(f"{k.removeprefix('choice/')}={r.config.get(k, '-')}"
                     for k in ([k for k in keys if k.startswith("choice/")] or keys)) or "default" for r in runs]
    variants: dict[str, Variant] = {}
    for run, label in zip(runs, labels):
        if label not in variants:
            variants[label] = Variant(label, (label,), {})
        v = variants[label]
        v.runs.append(run)
        if run.config and not v.values:
            v.values = {k: run.config.get(k) for k in keys}
    return list(variants.values()), (by or keys)


def check_group_by(runs: list[Run], by: list[str], varying: list[str]) -> None:
    """A ``--group-by`` key that no run has is a one-line error with the closest keys (it would pool every run
    into one variant ``key=-``)."""
    known = sorted({k for r in runs for k in r.config})
    for key in by:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"--group-by {key!r} is a config key of no run; {hint}keys that vary: "
                        f"{', '.join(display_keys(varying)) or '(none)'}")


def display_keys(keys: list[str]) -> list[str]:
    """The varying keys worth showing: a component's own fields are left out when its choice varies."""
    groups = [k.removeprefix("choice/").replace("/", ".") + "." for k in keys if k.startswith("choice/")]
    return [k for k in keys if not (k.startswith(tuple(groups)) and not k.startswith("choice/"))]


def _params(v: Variant, field_name: str) -> str:
    vals = sorted({int(x) for x in (r.metric(field_name) for r in v.ok) if x is not None})
    if not vals:
        return "-"
    return f"{vals[0]:,}" if len(vals) == 1 else f"{vals[0]:,}–{vals[-1]:,}"


def check_metric(metric: str) -> str:
    if metric not in RANKABLE:
        raise UserError(f"--metric {metric!r} is not one of {', '.join(RANKABLE)}")
    return metric


def ranked(variants: list[Variant], metric: str = DEFAULT_METRIC) -> list[Variant]:
    """Variants best first by the mean of ``metric`` (lower is better, except tokens/s); those without it last."""
    sign = -1.0 if check_metric(metric) in HIGHER_IS_BETTER else 1.0
    scored = [(v, v.stat(metric).mean) for v in variants]
    have = sorted((x for x in scored if not math.isnan(x[1])), key=lambda x: sign * x[1])
    return [v for v, _ in have] + [v for v, m in scored if math.isnan(m)]


def rows(variants: list[Variant], metric: str = DEFAULT_METRIC) -> list[dict[str, str]]:
    """The results table as display strings, with each variant's rank by ``metric`` (variants already ranked)."""
    out = []
    n = 0
    for v in variants:
        has = not math.isnan(v.stat(metric).mean)
        n += has
        row = {"rank": str(n) if has else "-", "variant": v.label, "seeds ok": f"{len(v.ok)}/{len(v.runs)}"}
        for col, name, digits in METRICS:
            row[col] = v.stat(name).fmt(digits)
        for col, name in PARAMS:
            row[col] = _params(v, name)
        row["failed"] = str(len(v.failed)) if v.failed else ""
        out.append(row)
    return out


SPREAD_NOTE = ("Values are the mean over seeds ± the 95% confidence interval (Student t, n-1 degrees of freedom) "
               "with 3 or more seeds, the mean [min–max] with 2, the value alone with 1. train s: time in training "
               "steps; total s: the job's wall time from start to exit.")


def ranked_by(metric: str) -> str:
    col = next(c for c, name, _ in METRICS if name == metric)
    return f"ranked by {col} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better)"


def write_markdown(path: Path, variants: list[Variant], keys: list[str], runs: list[Run],
                   metric: str = DEFAULT_METRIC) -> None:
    table = rows(variants, metric)
    cols = list(table[0].keys()) if table else []
    lines = ["# decoderlab comparison", "",
             f"{len(runs)} runs, {len(variants)} variants, {ranked_by(metric)}; "
             f"varying: {', '.join(display_keys(keys)) or '(none)'}.", SPREAD_NOTE, "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in table]
    failed = [r for r in runs if not r.ok]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{r.dir}`: {r.label}" for r in failed]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, variants: list[Variant], keys: list[str]) -> None:
    """One row per variant: varying keys, counts, and mean / ci95 / min / max / n of every metric (numbers)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = ["variant", *keys, "runs", "completed", "failed"]
        for _, name, _ in METRICS:
            header += [f"{name}_mean", f"{name}_ci95", f"{name}_min", f"{name}_max", f"{name}_n"]
        header += [name.replace(".", "_") for _, name in PARAMS]
        w.writerow(header)
        for v in variants:
            row: list[Any] = [v.label, *[v.values.get(k) for k in keys], len(v.runs), len(v.ok), len(v.failed)]
            for _, name, _ in METRICS:
                s = v.stat(name)
                row += [_num(s.mean), _num(s.half), _num(s.min), _num(s.max), s.n]
            row += [_params(v, name).replace(",", "").replace("-", "") for _, name in PARAMS]
            w.writerow(row)


def write_runs_csv(path: Path, runs: list[Run], labels: dict[int, str]) -> None:
    """One row per run, failed ones included with their reason."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        figures = [name for _, name, _ in METRICS] + ["params.total", "params.non_embedding"]
        w.writerow(["variant", "dir", "seed", "status", "reason", *[f.replace(".", "_") for f in figures]])
        for r in runs:
            w.writerow([labels.get(id(r), ""), str(r.dir), r.config.get("seed", ""), r.status, r.reason,
                        *[_num(r.metric(m)) for m in figures]])


def _num(x: float | None) -> Any:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x
